"""gunicorn entry point: `gunicorn wsgi:app`. The only module-level app."""

from signflow import create_app

app = create_app()
