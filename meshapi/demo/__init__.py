"""`manage.py demo`: the embedded demo — a tenant, a key, a live API and a sample mesh."""
