"""Benchmarks: the runs table and run form, a run's page with charts, the compare view and the exports."""
from flask import Blueprint

bp = Blueprint("benchmarks", __name__, url_prefix="/benchmarks")

from app.web.benchmarks import routes  # noqa: E402,F401  (registers the routes on bp)
