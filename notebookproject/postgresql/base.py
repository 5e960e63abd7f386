"""Django's PostgreSQL backend, its connection pool checked by notebookproject/db_pool.py.

Django builds the psycopg pool itself and hands it psycopg_pool's full check (an empty query
before every loan) when CONN_HEALTH_CHECKS is on, with no way to pass another; this subclass
builds the same pool with db_pool's check (a round trip only when the connection may be dead)
and its `reset`, which notes when each connection came back to the pool.
"""
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base

from .. import db_pool


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options:
            return None
        if self.alias not in self._connection_pools:
            from psycopg_pool import ConnectionPool

            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            options = {} if options is True else dict(options)
            kwargs = self.get_connection_params()
            kwargs["autocommit"] = True  # as Django's: each loan sets the mode it needs
            check = db_pool.check if self.settings_dict["CONN_HEALTH_CHECKS"] else None  # as Django's
            pool = ConnectionPool(kwargs=kwargs, open=False, configure=self._configure_connection, check=check, reset=db_pool.returned, **options)
            self._connection_pools.setdefault(self.alias, pool)  # as Django's: the first thread's wins
        return self._connection_pools[self.alias]
