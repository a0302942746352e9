"""Move the API tokens of DRF's plain-text table (authtoken_token) into knox's table of digests.

Each old token keeps working (knox finds it by its first 15 characters and checks its SHA-512), and
its plain-text row is deleted. Raw SQL, because ``rest_framework.authtoken`` is no longer installed;
installations that never had the table skip this.
"""

from django.db import migrations

OLD_TABLE = "authtoken_token"


def hash_plain_text_tokens(apps, schema_editor):
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS

    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    auth_token = apps.get_model("knox", "AuthToken")
    table = connection.ops.quote_name(OLD_TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {connection.ops.quote_name('key')}, user_id FROM {table}")
        rows = cursor.fetchall()
    # 'created' becomes the time of this migration (knox sets it on insert).
    auth_token.objects.bulk_create([
        auth_token(digest=hash_token(key), token_key=key[:CONSTANTS.TOKEN_KEY_LENGTH], user_id=user_id, expiry=None)
        for key, user_id in rows
    ], ignore_conflicts=True)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")


class Migration(migrations.Migration):

    dependencies = [
        ("diagnosis", "0002_digitization"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [
        # Not reversible into plain text: going back leaves the tokens hashed (they stop working).
        migrations.RunPython(hash_plain_text_tokens, migrations.RunPython.noop),
    ]
