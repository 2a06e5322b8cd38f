"""The mailing list: through the real CLI, and the API on SQLite and a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from bot.addresses import normalise_email
from bot.ledger import Ledger
from bot.subscriber_csv import export_csv, import_csv
from bot.subscriber_rows import subscribers
from bot.subscribers import Subscribers


def listed(project, *args: str) -> dict[str, dict]:
    result = project.cli("subscribers", "list", "--json", *args, check=True)
    return {row["email"]: row for row in json.loads(result.stdout)}


# -- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    ("  Ann.Lee@Example.COM \n", "Ann.Lee@example.com"),  # trimmed, domain lower-cased
    ("MiXeD+tag@EXAMPLE.org", "MiXeD+tag@example.org"),   # the local part is kept as written
    ("x@Bücher.DE", "x@bücher.de"),
])
def test_addresses_are_normalised(given, expected):
    assert normalise_email(given) == expected
    assert normalise_email(expected) == expected


@pytest.mark.parametrize("given, says", [
    ("", "required"),
    ("no-at-sign.example.org", "@-sign"),
    ("two@@example.org", "not a valid email address"),
    ("ann@localhost", "not a valid email address"),
])
def test_bad_addresses_raise_a_clear_value_error(given, says):
    with pytest.raises(ValueError, match=says):
        normalise_email(given)


# -- the CLI ----------------------------------------------------------------------------------


def test_add_list_and_export_through_the_cli(project):
    added = project.cli("subscribers", "add", "  Ann@Example.COM ", "--name", "Ann Lee")
    assert added.returncode == 0, added.stderr
    assert "Ann@example.com: active" in added.stdout
    project.cli("subscribers", "add", "bob@example.org", "--pending", check=True)

    bad = project.cli("subscribers", "add", "not-an-address")
    assert bad.returncode == 2
    assert "'not-an-address' is not a valid email address" in bad.stderr

    rows = listed(project)
    assert set(rows) == {"Ann@example.com", "bob@example.org"}
    assert (rows["Ann@example.com"]["name"], rows["Ann@example.com"]["state"]) == (
        "Ann Lee", "active")
    assert rows["Ann@example.com"]["confirmed_at"] is not None
    assert rows["bob@example.org"]["state"] == "pending"
    assert set(listed(project, "--state", "pending")) == {"bob@example.org"}
    assert project.cli("subscribers", "list", "--state", "sleeping").returncode == 2

    table = project.cli("subscribers", "list", check=True)
    assert "Ann@example.com" in table.stdout and "pending" in table.stdout
    assert "2 subscribers: 1 active, 1 pending" in table.stderr

    exported = project.cli("subscribers", "export", check=True)
    records = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["email"], r["name"], r["state"]) for r in records] == [
        ("Ann@example.com", "Ann Lee", "active"), ("bob@example.org", "", "pending")]
    project.cli("subscribers", "export", "list.csv", check=True)
    assert (project.root / "list.csv").read_text(encoding="utf-8") == exported.stdout


def test_an_import_with_bad_rows_imports_nothing_and_names_every_bad_line(project):
    bad = project.root / "bad.csv"
    bad.write_text(
        "email,name,state\n"
        "one@example.org,One\n"
        "two@example.org,Two\n"
        "three-at-example.org,Three\n"         # line 4: not an address
        "four@example.org,Four\n"
        "five@example.org,Five,sleeping\n",    # line 6: unknown state
        encoding="utf-8",
    )
    result = project.cli("subscribers", "import", str(bad))
    assert result.returncode == 1
    assert f"{bad}:4: 'three-at-example.org' is not a valid email address" in result.stderr
    assert f"{bad}:6: unknown state 'sleeping'" in result.stderr
    assert "2 of 5 rows rejected; nothing was imported" in result.stderr
    assert listed(project) == {}

    good = project.root / "good.csv"
    good.write_text('one@example.org,One\n Two@EXAMPLE.org ,"Two, Jr"\nthree@example.org,,'
                    "pending\n", encoding="utf-8")
    result = project.cli("subscribers", "import", str(good))
    assert result.returncode == 0, result.stderr
    assert "3 rows: 3 added" in result.stdout
    rows = listed(project)
    assert {e: (r["name"], r["state"]) for e, r in rows.items()} == {
        "one@example.org": ("One", "active"),
        "Two@example.org": ("Two, Jr", "active"),
        "three@example.org": (None, "pending"),
    }


def test_duplicates_in_a_file_are_rejected_with_both_lines(project):
    path = project.root / "dupes.csv"
    path.write_text("a@example.org\nb@example.org\na@EXAMPLE.ORG\n", encoding="utf-8")
    result = project.cli("subscribers", "import", str(path))
    assert result.returncode == 1
    assert f"{path}:3: a@example.org appears twice (first on line 1)" in result.stderr
    assert listed(project) == {}


def test_whoever_left_is_never_re_added_by_an_import(project):
    project.cli("subscribers", "add", "gone@example.org", check=True)
    assert project.cli("subscribers", "remove", "gone@example.org", check=True).returncode == 0
    path = project.root / "again.csv"
    path.write_text("email,name,state\ngone@example.org,Gone,active\nnew@example.org,,\n",
                    encoding="utf-8")
    result = project.cli("subscribers", "import", str(path), check=True)
    assert "1 had unsubscribed or bounced and were not re-added" in result.stdout
    rows = listed(project)
    assert rows["gone@example.org"]["state"] == "unsubscribed"
    assert rows["new@example.org"]["state"] == "active"

    # An operator's explicit `add --force` is the one way back besides their own confirmed
    # sign-up; `--purge` forgets the address.
    project.cli("subscribers", "add", "gone@example.org", "--force", check=True)
    assert listed(project)["gone@example.org"]["state"] == "active"
    project.cli("subscribers", "remove", "gone@example.org", "--purge", check=True)
    assert "gone@example.org" not in listed(project)
    missing = project.cli("subscribers", "remove", "gone@example.org")
    assert missing.returncode == 1 and "not on the list" in missing.stderr


def test_an_export_imports_back_unchanged(project, tmp_path):
    for address, extra in (("a@example.org", ()), ("b@example.org", ("--pending",))):
        project.cli("subscribers", "add", address, *extra, check=True)
    project.cli("subscribers", "remove", "a@example.org", check=True)
    project.cli("subscribers", "export", "out.csv", check=True)
    before = listed(project)
    result = project.cli("subscribers", "import", "out.csv", check=True)
    assert "2 unchanged" in result.stdout
    assert listed(project) == before


# -- the API, on both databases ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    return request.getfixturevalue("pg_url")


def test_the_subscriber_lifecycle(database_url, tmp_path):
    clock = [datetime(2026, 3, 1, tzinfo=UTC)]
    ledger = Ledger(database_url, clock=lambda: clock[0])
    people = Subscribers(ledger)
    try:
        ann = people.add("Ann@Example.org", "Ann")
        assert (ann.address, ann.state, ann.confirmed_at) == ("Ann@example.org", "active", clock[0])
        assert people.get(" Ann@EXAMPLE.ORG ") == ann
        assert people.is_active("Ann@example.org") and people.is_active("ann@example.org")  # one

        assert people.request("new@example.org", "New")  # a confirmation is due
        assert not people.request("new@example.org")  # not again within minutes
        clock[0] += timedelta(hours=1)
        assert people.request("new@example.org")
        assert not people.request("Ann@example.org")  # already active: nothing to send
        assert people.get("new@example.org").state == "pending"
        assert not people.is_active("new@example.org")
        assert people.confirm("new@example.org") and not people.confirm("new@example.org")
        assert people.count("active") == 2

        # Soft bounces count only in a row; hard ones at once.
        limits = dict(hard_limit=1, soft_limit=2)
        assert not people.record_bounce("new@example.org", hard=False, **limits)
        people.record_delivered("new@example.org")
        assert not people.record_bounce("new@example.org", hard=False, **limits)
        assert people.is_active("new@example.org")
        assert people.record_bounce("new@example.org", hard=False, **limits)
        gone = people.get("new@example.org")
        assert (gone.state, gone.soft_bounces, gone.bounced_at) == ("bounced", 2, clock[0])
        assert not people.record_bounce("new@example.org", hard=False, **limits)  # already
        assert people.record_bounce("Ann@example.org", hard=True, **limits)
        assert people.get("Ann@example.org").hard_bounces == 1

        people.add("c@example.org")
        assert people.unsubscribe("c@example.org") and not people.unsubscribe("c@example.org")
        assert people.get("c@example.org").unsubscribed_at == clock[0]
        assert not people.unsubscribe("nobody@example.org")
        assert people.remove("c@example.org", purge=True) and people.get("c@example.org") is None

        path = tmp_path / "list.csv"
        path.write_text("x@example.org,X\ny@example.org\nnew@example.org,,active\n")
        report = import_csv(people, path)
        assert (report.added, report.unchanged, report.kept_out) == (2, 1, ["new@example.org"])
        assert people.get("new@example.org").state == "bounced"
        assert [s.email for s in people.iter_active(batch=1)] == ["x@example.org",
                                                                   "y@example.org"]
        assert people.count() == 4

        out = io.StringIO()
        assert export_csv(people, out) == 4
        assert out.getvalue().splitlines()[0] == (
            "email,name,state,created_at,confirmed_at,unsubscribed_at,bounced_at,reason")
    finally:
        ledger.close()


def test_iter_active_pages_by_id_and_sees_changes_between_pages(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    people = Subscribers(ledger)
    for n in range(7):
        people.add(f"p{n}@example.org", state="pending" if n == 3 else "active")
    seen = []
    for subscriber in people.iter_active(batch=2):
        seen.append(subscriber.email)
        if subscriber.email == "p1@example.org":
            people.unsubscribe("p5@example.org")   # left before their page was read
            people.add("late@example.org")          # joined: a later id, still included
    assert seen == ["p0@example.org", "p1@example.org", "p2@example.org", "p4@example.org",
                    "p6@example.org", "late@example.org"]
    with pytest.raises(ValueError):
        list(people.iter_active(batch=0))
    ledger.close()


def test_iter_active_streams_instead_of_loading_the_list(tmp_path):
    """The stream's peak memory is a small fraction of the whole list's."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'big.sqlite3'}")
    people = Subscribers(ledger)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"email": f"reader{n}@example.org", "name": None, "state": "active",
             "created_at": now, "updated_at": now, "hard_bounces": 0, "soft_bounces": 0}
            for n in range(10_000)]
    with ledger.engine.begin() as conn:
        conn.execute(insert(subscribers), rows)
    del rows

    tracemalloc.start()
    count = sum(1 for _ in people.iter_active(batch=250))
    streamed = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    everyone = list(people.iter_active(batch=10_000))
    loaded = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ledger.close()
    assert count == len(everyone) == 10_000
    assert streamed * 10 < loaded, (streamed, loaded)


def test_a_web_request_never_moves_a_left_address_back_to_pending(tmp_path):
    """Consent sticks: only the address's own confirm link, after a new request, brings it
    back; a link from before it left changes nothing."""
    clock = [datetime(2026, 3, 1, tzinfo=UTC)]
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}", clock=lambda: clock[0])
    people = Subscribers(ledger)
    try:
        people.add("gone@example.org")
        clock[0] += timedelta(hours=1)
        people.unsubscribe("gone@example.org")
        assert not people.confirm("gone@example.org")  # an old link: nothing changes
        clock[0] += timedelta(hours=1)
        assert people.request("gone@example.org")
        assert people.get("gone@example.org").state == "unsubscribed"
        assert not people.request("gone@example.org")  # not mailed again within minutes
        clock[0] += timedelta(minutes=1)
        assert people.confirm("gone@example.org")
        assert people.get("gone@example.org").state == "active"
    finally:
        ledger.close()


def test_one_subscriber_per_address_whatever_its_case(database_url, tmp_path):
    ledger = Ledger(database_url)
    people = Subscribers(ledger)
    try:
        people.add("Ann.Case@Example.org", "Ann")
        people.add("ann.case@example.org")  # the same person
        assert people.request("ANN.CASE@example.org") is False  # active: no confirmation mail
        assert people.unsubscribe("ann.CASE@EXAMPLE.ORG")
        everyone = list(people.iter_all())
        assert len(everyone) == 1
        assert everyone[0].address == "Ann.Case@example.org"  # the spelling first given
        assert everyone[0].state == "unsubscribed"
        # The web form cannot re-add them by changing the case either.
        people.request("ANN.case@example.org")
        assert people.get("Ann.Case@example.org").state == "unsubscribed"
    finally:
        ledger.close()


def test_a_v1_list_with_two_spellings_becomes_one_subscriber_who_stays_out(tmp_path):
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # the version 1 schema, as it was shipped
        conn.execute(text("CREATE TABLE briefbot_meta (key VARCHAR(100) PRIMARY KEY, "
                          "value TEXT NOT NULL)"))
        conn.execute(text("INSERT INTO briefbot_meta VALUES ('schema_version', '1')"))
        conn.execute(text(
            "CREATE TABLE subscribers (id INTEGER PRIMARY KEY, email VARCHAR(320) NOT NULL "
            "UNIQUE, name VARCHAR(200), state VARCHAR(16) NOT NULL, created_at DATETIME NOT "
            "NULL, updated_at DATETIME NOT NULL, confirmed_at DATETIME, unsubscribed_at "
            "DATETIME, bounced_at DATETIME, hard_bounces INTEGER NOT NULL DEFAULT 0, "
            "soft_bounces INTEGER NOT NULL DEFAULT 0)"))
        for email, state in (("Bo@example.org", "active"), ("bo@example.org", "unsubscribed"),
                             ("Cy@example.org", "active")):
            conn.execute(text("INSERT INTO subscribers (email, state, created_at, updated_at) "
                              "VALUES (:e, :s, '2026-01-01', '2026-01-01')"),
                         {"e": email, "s": state})
    engine.dispose()
    ledger = Ledger(url)
    try:
        people = {s.email: s for s in Subscribers(ledger).iter_all()}
        assert set(people) == {"bo@example.org", "cy@example.org"}
        assert people["bo@example.org"].state == "unsubscribed"  # the unsubscribe stands
        assert people["bo@example.org"].address == "Bo@example.org"
        assert people["cy@example.org"].state == "active"
    finally:
        ledger.close()


def test_an_export_never_writes_a_cell_a_spreadsheet_would_run(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    people = Subscribers(ledger)
    try:
        for name in ('=HYPERLINK("http://evil.example")', "+1 trick", "-2", "@SUM(A1)",
                     "\tTabbed"):
            people.add(f"user{len(name)}{name[:1].encode().hex()}@example.org", name)
        out = io.StringIO()
        export_csv(people, out)
    finally:
        ledger.close()
    names = [row["name"] for row in csv.DictReader(io.StringIO(out.getvalue()))]
    assert len(names) == 5
    assert all(name.startswith("'") for name in names), names


def test_add_never_re_adds_whoever_left_without_force(project):
    project.cli("subscribers", "add", "left@example.org", check=True)
    project.cli("subscribers", "remove", "left@example.org", check=True)
    again = project.cli("subscribers", "add", "Left@example.org")
    assert again.returncode == 2
    assert "unsubscribed on" in again.stderr and "--force" in again.stderr
    assert listed(project)["left@example.org"]["state"] == "unsubscribed"
    forced = project.cli("subscribers", "add", "left@example.org", "--force")
    assert forced.returncode == 0
    assert listed(project)["left@example.org"]["state"] == "active"


def test_a_list_from_schema_1_is_read_as_it_is_and_upgraded_with_a_reason_column(tmp_path):
    """A database written before `reason` existed: a read-only look works without it, and the
    next writer adds the column (schema 3), keeping every row."""
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(f"sqlite:///{path}")
    Subscribers(ledger).add("ann@example.org")
    ledger.close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE subscribers DROP COLUMN reason")
        conn.execute("UPDATE briefbot_meta SET value = '1' WHERE key = 'schema_version'")
    reader = Ledger(f"sqlite:///{path}", readonly=True)
    try:
        assert [(s.email, s.reason) for s in Subscribers(reader).iter_all()] == [
            ("ann@example.org", None)]
    finally:
        reader.close()
    writer = Ledger(f"sqlite:///{path}")
    try:
        people = Subscribers(writer)
        assert people.unsubscribe("ann@example.org", reason="complaint (abuse report)")
        assert people.get("ann@example.org").reason == "complaint (abuse report)"
    finally:
        writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM briefbot_meta").fetchall() == [("3",)]
