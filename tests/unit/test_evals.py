"""The eval's parts without a pipeline: question sets (the bundled one against
docs/), their errors, the measures over ranked chunks and the answer checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.grounding import cited_indices, groundedness, is_refusal
from evals.labels import check_labels
from evals.metrics import ranked_units, retrieval_metrics
from evals.questions import EvalSetError, Question, load_set
from graph.cli.eval import BUNDLED_SET
from retrieval.types import Hit
from tests.conftest import DOCS


def test_bundled_set_is_large_and_every_label_still_holds_in_docs() -> None:
    qset = load_set(BUNDLED_SET)
    assert len(qset.questions) >= 60
    assert all(q.evidence for q in qset.questions)
    assert qset.has_sections
    assert check_labels(qset, DOCS) == []
    # every bundled document is asked about
    asked = {label.split("#")[0] for q in qset.questions for label in q.relevant}
    assert asked == {p.name for p in DOCS.glob("*.md")} - {"evaluation.md"}


def test_a_docs_change_that_breaks_a_label_is_caught(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for p in DOCS.glob("*.md"):
        (docs / p.name).write_text(p.read_text())
    releases = docs / "releases.md"
    text = releases.read_text()
    releases.write_text(
        text.replace("## The canary judge", "## Canary judgement").replace(
            "hashes into one of 10,000 buckets", "hashes into a bucket"
        )
    )
    (docs / "tenants.md").unlink()
    problems = check_labels(load_set(BUNDLED_SET), docs)
    assert any("rl-canary" in p and "The canary judge" in p for p in problems)
    assert any("rl-sticky" in p and "evidence" in p for p in problems)
    assert any(p.startswith("tn-add") for p in problems)


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (['{"question": "q", "relevant": ["a.md"]}', "{nope"], ":2: not JSON"),
        (['{"question": "q"}'], ":1: relevant: Field required"),
        (['{"question": "q", "relevant": []}'], ":1: relevant: List should have"),
        (['{"question": "  ", "relevant": ["a.md"]}'], ":1: question:"),
        (['{"question": "q", "relevant": ["a.md"], "extra": 1}'], ":1: extra:"),
        (['{"question": "q", "relevant": [-3]}'], "not a row number"),
        (['["q"]'], ":1: expected a JSON object"),
        (
            ['{"id": "x", "question": "q", "relevant": ["a"]}'] * 2,
            ":2: id 'x' repeats line 1",
        ),
        ([""], "no questions"),
    ],
)
def test_malformed_jsonl_is_one_line_naming_the_line(
    tmp_path: Path, lines: list[str], needle: str
) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalSetError) as err:
        load_set(path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_beir_folder_and_its_errors(tmp_path: Path) -> None:
    beir = tmp_path / "scifact"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "x"}\n')
    (beir / "queries.jsonl").write_text(
        '{"_id": "1", "text": "what is x?"}\n{"_id": "2", "text": "unjudged"}\n'
    )
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t0\n"
    )
    qset = load_set(beir)
    assert [(q.id, q.relevant) for q in qset.questions] == [("1", ("d1",))]
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n9\td1\t1\n")
    with pytest.raises(EvalSetError, match="unknown query id '9'"):
        load_set(beir)
    (beir / "corpus.jsonl").unlink()
    with pytest.raises(EvalSetError, match=r"corpus\.jsonl is missing"):
        load_set(beir)
    with pytest.raises(EvalSetError, match="does not exist"):
        load_set(tmp_path / "nothing.jsonl")


def test_the_set_hash_follows_content_not_layout(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    a.write_text('{"id": "1", "question": "q", "relevant": ["x.md"]}\n')
    b.write_text('\n{"relevant": ["x.md"],   "question": "q", "id": "1"}\n\n')
    c.write_text('{"id": "1", "question": "q", "relevant": ["y.md"]}\n')
    assert load_set(a).sha256 == load_set(b).sha256 != load_set(c).sha256


def _hit(doc: str, title: str | None = None, chunk: int = 0) -> Hit:
    return Hit(chunk, doc, "text", 0.0, title)


def test_chunks_become_units_once_at_their_best_rank() -> None:
    hits = [
        _hit("b.md", "Other", 4),
        _hit("a.md", "Intro", 1),
        _hit("b.md", "Other", 5),
        _hit("a.md", "Setup", 2),
        _hit("faq.md", None, 9),
    ]
    assert ranked_units(hits, {"a.md"}, "doc") == ["b.md", "a.md", "faq.md"]
    assert ranked_units(hits, {"a.md#Setup"}, "section") == [
        "b.md#Other",
        "a.md#Intro",
        "a.md#Setup",
        "faq.md#",
    ]
    # a BEIR corpus id names a document without its suffix; a chunk id a row
    assert ranked_units(hits, {"faq", "chunk:1"}, "doc") == [
        "b.md",
        "chunk:1",
        "a.md",
        "faq",
    ]


def test_measures_come_from_ir_measures_over_all_questions() -> None:
    questions = [
        Question("first", "q1", ("a.md",)),
        Question("second", "q2", ("a.md#Setup", "c.md")),
        Question("nothing", "q3", ("a.md",)),
    ]
    rankings = [
        [_hit("a.md", "Intro"), _hit("b.md")],
        [_hit("b.md"), _hit("a.md", "Intro"), _hit("a.md", "Setup")],
        [],
    ]
    doc, per = retrieval_metrics(questions, rankings, "doc", 5)
    assert per["first"]["hit@1"] == 1.0 and per["first"]["mrr@10"] == 1.0
    assert per["second"]["hit@1"] == 0.0 and per["second"]["mrr@10"] == 0.5
    assert per["second"]["recall@5"] == 0.5  # c.md never came
    assert per["nothing"] == dict.fromkeys(per["nothing"], 0.0)
    assert doc["hit@5"] == pytest.approx(2 / 3)
    _, per = retrieval_metrics(questions, rankings, "section", 5)
    assert per["first"]["hit@1"] == 1.0  # labelled by document only
    assert per["second"]["mrr@10"] == pytest.approx(1 / 3)
    assert 0 < per["second"]["ndcg@10"] < per["first"]["ndcg@10"] == 1.0


def test_citations_refusals_and_groundedness() -> None:
    assert cited_indices("Use --set [2]. See [1, 3] and [9].", 3) == [2, 1, 3]
    assert is_refusal("I don't know.") and is_refusal("   ")
    assert is_refusal("The context does not mention the port.")
    assert not is_refusal("Run ragserve index build [1].")
    source = "The default window is 0 seconds, so a request runs at once."
    grounded = groundedness("The default window is 0 seconds [1].", [source])
    assert (grounded.sentences, grounded.supported) == (1, 1)
    invented = groundedness(
        "The default window is 0 seconds. Kafka queues requests for 250 ms "
        "in a Redis cluster.",
        [source],
    )
    assert (invented.sentences, invented.supported, invented.score) == (2, 1, 0.5)
    wrong_number = groundedness("The default window is 5 seconds.", [source])
    assert wrong_number.score == 0.0
    assert groundedness("Yes.", [source]).score is None  # too short to judge


def test_result_keys_are_stable_json(tmp_path: Path) -> None:
    from evals.report import write_json

    out = write_json(tmp_path / "deep" / "r.json", {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]
