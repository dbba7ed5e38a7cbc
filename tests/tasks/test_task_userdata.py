"""User data files, Hugging Face datasets (through a stand-in), and loader error messages."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from opro.tasks import TaskError, load_task, split


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- JSONL / CSV / JSON


def test_jsonl_file(tmp_path: Path) -> None:
    rows = [
        {"input": "2 + 2 =", "target": 4, "id": "a"},
        {"input": "Is the sky blue?", "target": "Yes"},
        {"input": "Which is a fruit?", "target": "(B)", "choices": ["car", "apple"]},
    ]
    path = _write(tmp_path / "mine.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    task = load_task(str(path))
    assert len(task) == 3
    assert [e.target for e in task.examples] == ["4", "Yes", "(B)"]
    assert [e.id for e in task.examples] == ["a", "1", "2"]
    third = task.examples[2]
    assert third.choices == ("car", "apple")
    assert third.input.endswith("Options:\n(A) car\n(B) apple")
    assert task.default_train_fraction == 0.2


def test_jsonl_custom_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "qa.jsonl", '{"q": "1+1?", "a": "2"}\n{"q": "2+2?", "a": "4"}\n')
    task = load_task(str(path), input_field="q", target_field="a")
    assert [e.input for e in task.examples] == ["1+1?", "2+2?"]
    assert task.answer_type == "number"


def test_jsonl_question_answer_columns_are_found(tmp_path: Path) -> None:
    path = _write(tmp_path / "qa.jsonl", '{"question": "Capital of France?", "answer": "Paris"}\n')
    assert load_task(str(path)).examples[0].target == "Paris"


def test_csv_file(tmp_path: Path) -> None:
    text = (
        "input,target,choices\n"
        '"Pick the animal, please",(A),dog|table\n'
        '"A question\nover two lines",no,\n'
        "Sum of 2 and 3?,5,\n"
    )
    task = load_task(str(_write(tmp_path / "data.csv", text)))
    assert len(task) == 3
    assert task.examples[0].choices == ("dog", "table")
    assert task.examples[1].input == "A question\nover two lines"
    assert task.examples[2].target == "5"


def test_csv_json_choices_and_custom_columns(tmp_path: Path) -> None:
    text = 'prompt,gold,opts\nWhich?,(B),"[""x"", ""y""]"\n'
    task = load_task(
        str(_write(tmp_path / "d.csv", text)),
        input_field="prompt",
        target_field="gold",
        choices_field="opts",
    )
    assert task.examples[0].choices == ("x", "y")
    assert task.is_multiple_choice


def test_bbh_style_json_file(tmp_path: Path) -> None:
    data = {"examples": [{"input": "not True is", "target": "False"}]}
    task = load_task(str(_write(tmp_path / "b.json", json.dumps(data))))
    assert task.answer_type == "boolean"


# ---------------------------------------------------------------- error messages


def _error(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(TaskError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_jsonl_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", '{"input": "a", "target": "b"}\n{"input": "a",\n')
    message = _error(load_task, str(path))
    assert "bad.jsonl line 2" in message and "not valid JSON" in message


def test_jsonl_missing_target(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", '{"input": "a", "target": "b"}\n\n{"input": "c"}\n')
    message = _error(load_task, str(path))
    assert "m.jsonl line 3" in message and "target" in message


def test_jsonl_not_an_object(tmp_path: Path) -> None:
    message = _error(load_task, str(_write(tmp_path / "l.jsonl", "[1, 2]\n")))
    assert "l.jsonl line 1" in message


def test_jsonl_empty_target(tmp_path: Path) -> None:
    message = _error(load_task, str(_write(tmp_path / "e.jsonl", '{"input": "a", "target": " "}')))
    assert "e.jsonl line 1" in message and "empty" in message


def test_empty_file(tmp_path: Path) -> None:
    message = _error(load_task, str(_write(tmp_path / "empty.jsonl", "\n")))
    assert "empty.jsonl" in message and "no examples" in message


def test_csv_missing_column(tmp_path: Path) -> None:
    message = _error(load_task, str(_write(tmp_path / "c.csv", "text,label_x\na,b\n")))
    assert "c.csv" in message and "input" in message and "text, label_x" in message


def test_csv_named_column_missing(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", "input,target\na,b\n")
    message = _error(load_task, str(path), target_field="gold")
    assert "'gold'" in message


def test_csv_row_errors_name_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", "input,target\na,b\nc,\n")
    assert "r.csv line 3" in _error(load_task, str(path))
    path = _write(tmp_path / "x.csv", "input,target\na,b,c\n")
    assert "x.csv line 2" in _error(load_task, str(path))


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"input": "caf\xe9", "target": "x"}\n')
    assert "UTF-8" in _error(load_task, str(path))


def test_missing_user_file(tmp_path: Path) -> None:
    assert "not found" in _error(load_task, str(tmp_path / "nope.jsonl"))


def test_unknown_suffix(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.txt", "hello")
    assert "unknown file type" in _error(load_task, str(path))


def test_unknown_task_suggests_a_name() -> None:
    message = _error(load_task, "bbh/navigat")
    assert "bbh/navigate" in message


def test_missing_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPRO_DATA_DIR", raising=False)
    assert "OPRO_DATA_DIR" in _error(load_task, "gsm8k")
    missing = tmp_path / "nowhere"
    assert str(missing) in _error(load_task, "gsm8k", data_dir=missing)
    monkeypatch.setenv("OPRO_DATA_DIR", str(missing))
    assert str(missing) in _error(load_task, "bbh/snarks")


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "MultiArith-data").mkdir()
    data = [{"sQuestion": " How many? ", "lSolutions": [3.0]}]
    _write(tmp_path / "MultiArith-data" / "MultiArith.json", json.dumps(data))
    monkeypatch.setenv("OPRO_DATA_DIR", str(tmp_path))
    task = load_task("multiarith")
    assert task.examples[0].input == "How many?" and task.examples[0].target == "3"


def test_missing_data_file_names_it(tmp_path: Path) -> None:
    message = _error(load_task, "aqua", data_dir=tmp_path)
    assert "AQuA.json" in message and "not found" in message


def test_malformed_data_release_files(tmp_path: Path) -> None:
    (tmp_path / "BIG-Bench-Hard-data").mkdir()
    (tmp_path / "gsm_data").mkdir()
    (tmp_path / "AQuA-data").mkdir()
    (tmp_path / "MultiArith-data").mkdir()
    _write(tmp_path / "BIG-Bench-Hard-data" / "snarks.json", '{"examples": [')
    assert "snarks.json line 1" in _error(load_task, "bbh/snarks", data_dir=tmp_path)
    _write(tmp_path / "BIG-Bench-Hard-data" / "navigate.json", '{"examples": [{"input": 1}]}')
    assert "navigate.json example 0" in _error(load_task, "bbh/navigate", data_dir=tmp_path)
    _write(tmp_path / "gsm_data" / "gsm_train.tsv", "Q1\t5\tsol\nbroken line\n")
    assert "gsm_train.tsv line 2" in _error(load_task, "gsm8k", data_dir=tmp_path)
    good = {"question": "q", "options": ["A)1", "B)2"], "correct": "A"}
    bad = {"question": "q", "options": ["1", "2"], "correct": "A"}
    _write(tmp_path / "AQuA-data" / "AQuA.json", json.dumps(good) + "\n" + json.dumps(bad))
    assert "AQuA.json line 2" in _error(load_task, "aqua", data_dir=tmp_path)
    _write(tmp_path / "MultiArith-data" / "MultiArith.json", '[{"sQuestion": "q"}]')
    assert "MultiArith.json item 0" in _error(load_task, "multiarith", data_dir=tmp_path)


# ---------------------------------------------------------------- Hugging Face stand-in


def _fake_datasets(
    monkeypatch: pytest.MonkeyPatch, splits: dict[str, list[dict[str, Any]]]
) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def load_dataset(*args: Any) -> dict[str, list[dict[str, Any]]]:
        calls.append(args)
        return splits

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hf_dataset_with_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_datasets(
        monkeypatch,
        {
            "test": [{"question": "T1?", "answer": "Work.\n#### 1,000"}],
            "train": [{"question": f"Q{i}?", "answer": f"Because.\n#### {i}"} for i in range(10)],
        },
    )
    task = load_task("hf:openai/gsm8k:main")
    assert calls == [("openai/gsm8k", "main")]
    assert len(task) == 11 and task.test_start == 10
    assert task.examples[0].target == "0" and task.examples[0].id == "train/0"
    assert task.official_test[0].target == "1000"
    assert task.answer_type == "number"
    parts = split(task)
    assert len(parts.train) == 2 and parts.test == task.official_test


def test_hf_dataset_custom_columns_without_config(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_datasets(monkeypatch, {"train": [{"text": "a", "label": "yes"}] * 5})
    task = load_task("hf:someone/data", input_field="text")
    assert calls == [("someone/data",)]
    assert task.test_start is None and task.answer_type == "yes_no"
    assert len(split(task).train) == 1


def test_hf_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_datasets(monkeypatch, {"train": [{"text": "a"}]})
    assert "columns: text" in _error(load_task, "hf:x")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    assert "pip install datasets" in _error(load_task, "hf:x")


def test_hf_load_failure_is_a_task_error(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("datasets")

    def load_dataset(*args: Any) -> None:
        raise ConnectionError("offline")

    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    assert "offline" in _error(load_task, "hf:x")


def test_list_tasks_without_data_lists_generated_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    from opro.tasks import list_tasks

    monkeypatch.delenv("OPRO_DATA_DIR", raising=False)
    assert [info.name for info in list_tasks()] == [
        "synthetic/boolean_expressions",
        "synthetic/arithmetic",
    ]


def test_list_tasks_with_a_partial_data_dir(tmp_path: Path) -> None:
    from opro.tasks import list_tasks

    (tmp_path / "BIG-Bench-Hard-data").mkdir()
    data = {"examples": [{"input": "Is it?", "target": "Yes"}] * 3}
    _write(tmp_path / "BIG-Bench-Hard-data" / "navigate.json", json.dumps(data))
    infos = list_tasks(tmp_path)
    first = infos[0]
    assert (first.name, first.count, first.answer_type) == ("bbh/navigate", 3, "yes_no")
    assert len(infos) == 3
    assert "does not exist" in _error(list_tasks, tmp_path / "missing")
