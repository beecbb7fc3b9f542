"""Form fields shared by the panel's forms."""
from __future__ import annotations

from wtforms import IntegerField
from wtforms.validators import NumberRange, Optional

from app.domain.sizing import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS


def context_field(label: str) -> IntegerField:
    """An optional context length within the bounds maider accepts everywhere (sizing then checks the model)."""
    return IntegerField(label, validators=[Optional(), NumberRange(
        MIN_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS,
        message=f"Pick between {MIN_CONTEXT_TOKENS:,} and {MAX_CONTEXT_TOKENS:,} tokens.")])
