"""Flask extensions, created unbound and bound in ``create_app``."""
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from htmx_flask import Htmx

db = SQLAlchemy()
migrate = Migrate()
csrf = CSRFProtect()
htmx = Htmx()
