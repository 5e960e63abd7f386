"""Notebooks' database connections, stored in clear until now, encrypted with SECRETS_KEY
(notebooks_app/vault.py): the column keeps its type and holds the Fernet token as text."""
from django.db import migrations


def encrypt(apps, schema_editor):
    from notebooks_app import vault

    vault.encrypt_clear_connections(apps.get_model("notebooks_app", "Notebook"))


def decrypt(apps, schema_editor):
    from notebooks_app import vault

    vault.decrypt_connections(apps.get_model("notebooks_app", "Notebook"))


class Migration(migrations.Migration):

    dependencies = [
        ("notebooks_app", "0011_notebook_files_and_secrets"),
    ]

    operations = [
        migrations.RunPython(encrypt, decrypt),
    ]
