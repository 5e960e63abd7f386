"""A Django database backend: PostgreSQL as Django's, with the pool check of db_pool.py (base.py)."""

# Either engine setting means PostgreSQL (DATABASE_URL gives Django's, settings.py swaps in ours).
POSTGRESQL_ENGINES = ("django.db.backends.postgresql", "notebookproject.postgresql")
