"""docs/protocol.md lists exactly the client messages and error codes protocol.py defines."""
import re
from pathlib import Path

from notebooks_app import protocol

PROTOCOL_MD = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


def first_column_of_table_after(heading):
    """The backquoted names in the first column of the first table under `heading`."""
    section = PROTOCOL_MD.split(heading, 1)[1]
    rows = re.findall(r"^\| `([a-z_]+)` \|", section.split("\n\n|", 1)[-1].split("\n\n", 1)[0], flags=re.MULTILINE)
    return rows


def test_every_client_message_is_documented_and_nothing_else():
    assert sorted(first_column_of_table_after("## Client → server")) == sorted(protocol.MESSAGE_SCHEMAS)


def test_every_error_code_is_documented_and_nothing_else():
    assert sorted(first_column_of_table_after("### Error codes")) == sorted(protocol.ERROR_CODES)
