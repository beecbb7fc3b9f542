"""Development server: ``python run.py`` serves the panel (demo mode without credentials) like ``maider serve``."""
from app.cli import main

if __name__ == "__main__":
    main(["serve", "--port", "8765"])
