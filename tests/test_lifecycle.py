"""Datasets a person can steer (issue: guards, drop, rollback, retract, retention, history),
and advice that works: each rejection that proposes a change is followed literally."""

from __future__ import annotations

import json
import re
import shlex
import tempfile
import time
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehoused import lifecycle, operations, retention
from lakehoused.cli import main
from lakehoused.config import load_config
from lakehoused.errors import UnknownDataset
from lakehoused.events import VersionsExpired
from lakehoused.inbox import SourceFile
from lakehoused.inbox.local import staged_source
from lakehoused.ingest.pipeline import run_job
from lakehoused.lakehouse import Lakehouse


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


class User:
    """A person with a lakehouse: a config they edit, files they drop, commands they run."""

    def __init__(self, root: Path, capsys) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.toml"
        self.capsys = capsys
        self.datasets: dict[str, dict] = {}
        self.write_config()

    def write_config(self) -> None:
        text = (
            '[inbox]\npath = "inbox"\n[store]\npath = "var/objects"\n[state]\n'
            'path = "var/state"\n[server]\nport = 0\n'
        )
        for name, options in self.datasets.items():
            text += f"\n[datasets.{name}]\n"
            text += "".join(f"{k} = {_toml(v)}\n" for k, v in options.items())
        self.config.write_text(text, encoding="utf-8")

    def set(self, dotted: str, value: object) -> None:
        """`set datasets.x.key = value`, as the advice says, in config.toml."""
        _, dataset, key, *rest = dotted.split(".")
        options = self.datasets.setdefault(dataset, {})
        if rest:
            options.setdefault(key, {})[rest[0]] = value
        else:
            options[key] = value
        self.write_config()

    def run(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, "--config", str(self.config)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def drop(self, relpath: str, text: str) -> tuple[int, str, str]:
        """Put a file at inbox/relpath and ingest it through the one-shot command."""
        path = self.inbox / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return self.run("ingest", str(path))

    def follow(self, reason: str, relpath: str) -> list[str]:
        """Do literally what a rejection's reason advises; return what was done."""
        done = []
        for dotted, raw in re.findall(r"set (datasets\.[\w.]+) = (\"[^\"]*\"|\S+)", reason):
            self.set(dotted, json.loads(raw) if raw.startswith('"') else int(raw))
            done.append(f"set {dotted}")
            return done  # the first setting offered is enough
        removed = re.search(r"remove ([\w, ]+) from (datasets\.\w+\.types)", reason)
        if removed:
            _, dataset, _ = removed.group(2).split(".")
            for column in removed.group(1).split(", "):
                self.datasets[dataset]["types"].pop(column)
            self.write_config()
            return [f"removed {removed.group(1)}"]
        for command in re.findall(r"`(lakehoused [^`]+)`", reason):
            words = shlex.split(command)[1:]
            if "FILE" in words:  # a placeholder the person fills in
                words = [str(self.inbox / relpath) if w == "FILE" else w for w in words]
                words = ["renamed" if w == "NAME" else w for w in words]
                code, _, err = self.run(*words)
                assert code == 0, err
                return [command]
            code, _out, err = self.run(*words)
            assert code == 0, err
            done.append(command)
        return done


def rows(user: User, sql: str) -> list[list]:
    code, out, err = user.run("sql", sql, "--format", "json")
    assert code == 0, err
    return json.loads(out)["rows"]


@pytest.fixture
def user(tmp_path, capsys) -> User:
    return User(tmp_path, capsys)


ADVICE_CASES = {
    "append: a new column": (
        [("s/a.csv", "id,amount\n1,2\n")],
        ("s/b.csv", "id,amount,note\n2,3,x\n"),
    ),
    "replace: a new column": ([("w.csv", "id\n1\n")], ("w.csv", "id,extra\n2,x\n")),
    "replace: a missing column": ([("w.csv", "id,name\n1,a\n")], ("w.csv", "id\n2\n")),
    "replace: a retyped column": ([("w.csv", "id,amount\n1,2\n")], ("w.csv", "id,amount\n2,N/A\n")),
    "append: text in a number column": (
        [("s/a.csv", "id,amount\n1,2\n"), ("s/b.csv", "id,amount\n3,4\n")],
        ("s/c.csv", "id,amount\n5,N/A\n"),
    ),
    "append: a fraction in an integer column": (
        [("s/a.csv", "id,amount\n1,2\n")],
        ("s/b.csv", "id,amount\n2,2.5\n"),
    ),
    "a type hint the values do not fit": ([], ("w.csv", "id,amount\n1,x\n")),
    "a type hint for a column the file lacks": ([], ("w.csv", "id\n1\n")),
    "a top-level file for an append dataset": ([("s/a.csv", "id\n1\n")], ("s.csv", "id\n2\n")),
    "a sub-folder file for a replace dataset": ([("w.csv", "id\n1\n")], ("w/b.csv", "id\n2\n")),
    "a name with no letter or digit": ([], ("日本語.csv", "id\n1\n")),
}


@pytest.mark.parametrize("case", list(ADVICE_CASES))
def test_advice_followed_literally_lets_the_file_in(user, case):
    before, (relpath, text) = ADVICE_CASES[case]
    if case == "a type hint the values do not fit":
        user.set("datasets.w.types.amount", "BIGINT")
    if case == "a type hint for a column the file lacks":
        user.set("datasets.w.types.nope", "BIGINT")
    for earlier, content in before:
        assert user.drop(earlier, content)[0] == 0
    code, _, err = user.drop(relpath, text)
    assert code == 1 and "rejected" in err
    reason = err.split(": ", 1)[1]
    done = user.follow(reason, relpath)
    assert done, f"no advice to follow in: {reason}"
    if "--dataset" not in " ".join(done):
        code, out, err = user.run("ingest", str(user.inbox / relpath))
        assert code == 0, f"after {done}: {err}"
        assert "registered" in out
    code, out, _ = user.run("verify")
    assert code == 0, out


def test_every_value_survives_a_widening(user):
    user.drop("s/a.csv", "id,amount\n1,9007199254740993\n2,-7\n")
    code, _, err = user.drop("s/b.csv", "id,amount\n3,N/A\n")
    assert "lakehoused widen s amount VARCHAR" in err
    code, out, _ = user.run("widen", "s", "amount", "VARCHAR", "--reason", "N/A appears")
    assert code == 0 and "widened s.amount from BIGINT to VARCHAR" in out
    assert user.run("ingest", str(user.inbox / "s/b.csv"))[0] == 0
    assert rows(user, "SELECT id, amount FROM s ORDER BY id") == [
        [1, "9007199254740993"],
        [2, "-7"],
        [3, "N/A"],
    ]
    # An integer beyond 2^53 has no exact double: that widening is refused, not rounded.
    user.drop("t/a.csv", "id,amount\n1,9007199254740993\n")
    code, _, err = user.run("widen", "t", "amount", "DOUBLE", "--reason", "x")
    assert code == 1 and "no exact DOUBLE" in err


def test_drop_rollback_retract_each_one_event_with_its_reason(user):
    user.drop("w.csv", "id\n1\n")
    user.drop("w.csv", "id\n2\n")
    user.drop("s/a.csv", "n\n1\n")
    user.drop("s/b.csv", "n\n2\n")
    code, out, _ = user.run("rollback", "w", "--to", "1", "--reason", "v2 was wrong")
    assert code == 0 and "rolled w back to version 1 as version 3" in out
    assert rows(user, "SELECT id FROM w") == [[1]]
    parts = json.loads(user.run("datasets", "--json")[1])
    (sales,) = [d for d in parts if d["name"] == "s"]
    key = sales["parts"][0]["object_key"]
    code, out, _ = user.run("retract", "s", "--part", key, "--reason", "a.csv was a test")
    assert code == 0 and "retracted" in out
    assert rows(user, "SELECT n FROM s") == [[2]]
    code, out, _ = user.run("drop", "w", "--reason", "not needed")
    assert code == 0 and "dropped w (version 4): not needed" in out
    code, _, err = user.run("sql", "SELECT * FROM w")
    assert code == 1 and "w" in err
    events = [json.loads(line) for line in user.run("log", "--json")[1].splitlines()]
    commands = [e for e in events if e["type"] not in ("dataset.registered",)]
    assert [(e["type"], e["data"]["reason"]) for e in commands] == [
        ("dataset.rolled_back", "v2 was wrong"),
        ("dataset.part_retracted", "a.csv was a test"),
        ("dataset.dropped", "not needed"),
    ]
    # A dropped dataset's name is free: the next file starts it again, as version 5.
    user.drop("w.csv", "id,other\n9,x\n")
    assert json.loads(user.run("datasets", "--json")[1])[-1]["version"] == 5
    assert user.run("verify")[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("drop", "nope", "--reason", "x"), "no dataset named 'nope'"),
        (("rollback", "w", "--to", "9", "--reason", "x"), "has no version 9"),
        (("retract", "w", "--part", "k", "--reason", "x"), "replace dataset"),
        (("retract", "s", "--part", "k", "--reason", "x"), "has no current part 'k'"),
        (("widen", "w", "nope", "VARCHAR", "--reason", "x"), "has no column 'nope'"),
        (("widen", "w", "id", "BOOLEAN", "--reason", "x"), "widens to"),
        (("drop", "w", "--reason", "  "), "give a reason"),
        (("history", "nope"), "no dataset named 'nope'"),
    ],
)
def test_commands_refuse_clearly(user, args, message):
    user.drop("w.csv", "id\n1\n")
    user.drop("s/a.csv", "n\n1\n")
    code, _, err = user.run(*args)
    assert code == 1 and message in err


def test_history_tells_when_why_rows_sources_and_schema(user):
    user.set("datasets.w.on_schema_change", "add_columns")
    user.drop("w.csv", "id\n1\n")
    user.drop("w.csv", "id,note\n2,x\n3,y\n")
    user.run("drop", "w", "--reason", "retired")
    _, out, _ = user.run("history", "w", "--json")
    versions = json.loads(out)
    assert [(v["version"], v["event"], v["rows"]) for v in versions] == [
        (1, "dataset.registered", 1),
        (2, "dataset.registered", 2),
        (3, "dataset.dropped", 0),
    ]
    assert versions[1]["sources_added"][0]["name"] == "w.csv"
    assert versions[1]["schema_diff"] == {"added": ["note"], "removed": [], "retyped": []}
    assert versions[2]["reason"] == "retired"
    _code, out, _ = user.run("history", "w")
    assert "dataset.dropped" in out and "+note" in out and "retired" in out
    events = [json.loads(line) for line in user.run("log", "--json")[1].splitlines()]
    (changed,) = [e for e in events if e["type"] == "dataset.schema_changed"]
    assert changed["data"]["added"] == ["note"] and changed["seq"] + 1 == events[-2]["seq"]


def test_retention_expires_versions_and_gc_collects_their_objects(user):
    user.set("datasets.w.keep_versions", 2)
    for i in range(4):
        user.drop("w.csv", f"id\n{i}\n")
    events = [json.loads(line) for line in user.run("log", "--json")[1].splitlines()]
    expired = [e["data"]["versions"] for e in events if e["type"] == "dataset.versions_expired"]
    assert expired == [[1], [2]]  # each ingest expires what fell out
    objects = user.root / "var" / "objects" / "datasets" / "w"
    assert len(list(objects.iterdir())) == 4
    code, out, _ = user.run("gc", "--grace-s", "0", "--dry-run")
    assert "would remove datasets/w/" in out and len(list(objects.iterdir())) == 4
    code, out, _ = user.run("gc", "--grace-s", "0")
    assert code == 0 and "removed 2 objects" in out
    assert len(list(objects.iterdir())) == 2
    assert user.run("verify")[0] == 0
    code, _, err = user.run("rollback", "w", "--to", "1", "--reason", "x")
    assert code == 1 and "expired by retention" in err


def test_keep_days_keeps_the_last_versions_named_by_keep_versions(tmp_path, capsys):
    user = User(tmp_path, capsys)
    user.set("datasets.w.keep_days", 1)
    user.set("datasets.w.keep_versions", 2)
    for i in range(4):
        user.drop("w.csv", f"id\n{i}\n")
    with Lakehouse(load_config(user.config)) as lakehouse:
        assert retention.due(lakehouse.config, lakehouse.catalog, "w") is None  # all young
        later = time.time() + 2 * 86400
        found = retention.due(lakehouse.config, lakehouse.catalog, "w", now=later)
        assert found is not None and found.versions == [1, 2]
        assert found.reason == "retention: keep_versions = 2, keep_days = 1"


@pytest.mark.parametrize("command", ["drop", "rollback", "retract"])
def test_a_command_racing_an_ingest_loses_neither(user, command):
    """The command lands between an ingest's look at the catalog and its append."""
    user.drop("s/a.csv", "n\n1\n")
    user.drop("s/b.csv", "n\n2\n")
    config = load_config(user.config)
    with Lakehouse(config) as ingesting, Lakehouse(config) as commanding:
        racing = commanding.catalog.dataset("s")
        assert racing is not None

        acted: list[bool] = []

        def convert_while_a_person_acts(job):
            converted = run_job(job)
            if acted:
                return converted  # the retry, after the command: nothing races it now
            acted.append(True)
            if command == "drop":
                lifecycle.drop(commanding, "s", "race")
            elif command == "rollback":
                lifecycle.rollback(commanding, "s", 1, "race")
            else:
                lifecycle.retract(commanding, "s", racing.parts[0].object_key, "race")
            return converted

        path = user.inbox / "s" / "c.csv"
        path.write_text("n\n3\n", encoding="utf-8")
        with ingesting.staging.workspace() as workspace:
            source = SourceFile(PurePosixPath("s/c.csv"), time.time())
            staged = staged_source(source, path, workspace.source_path("c.csv"), path.as_uri())
            outcome = ingesting.ingestor.ingest(staged, workspace, convert_while_a_person_acts)
        assert outcome.status == "registered"
        types = [e.type for e in ingesting.log.read()]
        assert types[-2:] == [
            f"dataset.{ {'drop': 'dropped', 'rollback': 'rolled_back', 'retract': 'part_retracted'}[command] }",
            "dataset.registered",
        ]
        rows = sorted(
            r["n"]
            for p in ingesting.catalog.dataset("s").parts
            for r in pq.read_table(ingesting.cache.path(p.object_key)).to_pylist()
        )
        expected = {"drop": [3], "rollback": [1, 3], "retract": [2, 3]}[command]
        assert rows == expected
        assert operations.verify(ingesting) == []


def test_an_ingest_racing_a_command_loses_neither(user, monkeypatch):
    """An ingest lands between a command's look at the catalog and its append."""
    user.drop("s/a.csv", "n\n1\n")
    config = load_config(user.config)
    with Lakehouse(config) as commanding:
        append = commanding.log.append
        raced = []

        def append_after_an_ingest(event):
            if not raced:
                raced.append(True)
                assert user.drop("s/b.csv", "n\n2\n")[0] == 0  # another process's ingest
            return append(event)

        monkeypatch.setattr(commanding.log, "append", append_after_an_ingest)
        event = lifecycle.drop(commanding, "s", "retire")
        assert event.data["version"] == 3  # rebuilt after the ingest's version 2
    _code, out, _ = user.run("history", "s", "--json")
    assert [v["event"] for v in json.loads(out)] == [
        "dataset.registered",
        "dataset.registered",
        "dataset.dropped",
    ]
    with pytest.raises(UnknownDataset), Lakehouse(config) as again:
        lifecycle.drop(again, "s", "twice")


# --- the law, with real files: any mix of steps leaves a log that replays and verifies ------

FILES = ["w.csv", "s/a.csv", "s/b.csv", "s/c.csv"]
FILES = ["w.csv", "s/a.csv", "s/b.csv", "s/c.csv"]
INGEST = st.tuples(st.just("ingest"), st.sampled_from(FILES), st.integers(0, 3))
STEPS = st.lists(
    st.one_of(
        INGEST,
        INGEST,  # twice: most steps are files, so the commands have versions to act on
        st.tuples(st.just("drop"), st.sampled_from(["w", "s"])),
        st.tuples(st.just("rollback"), st.sampled_from(["w", "s"]), st.integers(1, 6)),
        st.tuples(st.just("retract"), st.just("s"), st.integers(0, 3)),
        st.tuples(st.just("expire"), st.sampled_from(["w", "s"]), st.integers(1, 3)),
    ),
    min_size=4,
    max_size=16,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_any_mix_of_steps_replays_to_the_same_digest_and_verifies(steps):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "inbox").mkdir()
        (root / "config.toml").write_text(
            '[inbox]\npath = "inbox"\n[store]\npath = "var/objects"\n[state]\npath = "var/state"\n'
        )
        with Lakehouse(load_config(root / "config.toml")) as lakehouse:
            for step in steps:
                _apply(lakehouse, root, step)
            live = lakehouse.catalog.digest()
            assert operations.verify(lakehouse) == []
            assert operations.replay(lakehouse) == live
            operations.gc(lakehouse, grace_s=0)
            assert operations.verify(lakehouse) == []
            # Whatever the steps left, every dataset answers, with the rows its parts hold.
            engine = lakehouse.open_engine()
            try:
                for info in lakehouse.catalog.datasets():
                    answer = engine.execute_json(f"SELECT count(*) FROM {info.name}", 1)
                    assert json.loads(answer.body)["rows"] == [[info.rows]]
            finally:
                engine.close()


def _apply(lakehouse: Lakehouse, root: Path, step: tuple) -> None:
    kind = step[0]
    try:
        if kind == "ingest":
            path = root / "inbox" / step[1]
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"n,v\n{step[2]},{step[1]}\n", encoding="utf-8")
            lakehouse.ingest_file(path)
        elif kind == "drop":
            lifecycle.drop(lakehouse, step[1], "test")
        elif kind == "rollback":
            lifecycle.rollback(lakehouse, step[1], step[2], "test")
        elif kind == "retract":
            info = lakehouse.catalog.dataset("s")
            if info is not None and info.parts:
                part = info.parts[step[2] % len(info.parts)].object_key
                lifecycle.retract(lakehouse, "s", part, "test")
        else:
            last = lakehouse.catalog.last_version(step[1])
            old = [v.version for v in lakehouse.catalog.versions(step[1])][: step[2]]
            if old and old[-1] < last:
                lakehouse.log.append(
                    VersionsExpired(dataset=step[1], versions=old, reason="test").to_event()
                )
    except (UnknownDataset, lifecycle.CommandRefused):
        pass  # a command the catalog refuses changes nothing


def test_retracting_the_last_part_leaves_an_empty_dataset_that_still_answers(user):
    user.drop("s/a.csv", "n,note\n1,x\n")
    parts = json.loads(user.run("datasets", "--json")[1])[0]["parts"]
    code, _, err = user.run("retract", "s", "--part", parts[0]["object_key"], "--reason", "bad")
    assert code == 0, err
    assert rows(user, "SELECT count(*), any_value(typeof(n)) FROM s") == [[0, None]]
    assert rows(user, "SELECT * FROM s") == []
    code, out, _ = user.run("sql", "SELECT * FROM s", "--format", "json")
    assert [c["type"] for c in json.loads(out)["columns"]] == ["BIGINT", "VARCHAR"]
    user.drop("s/b.csv", "n,note\n2,y\n")  # and takes parts again
    assert rows(user, "SELECT n FROM s") == [[2]]
