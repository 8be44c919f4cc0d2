"""State-tracking tasks: generators against brute force, determinism, loss positions, collation, metrics,
the evaluation command and the lm-eval export."""

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.experiments.evaluate import main as evaluate_main
from lrnn_lm.experiments.export_lm_eval import EXPORTED, export_rows
from lrnn_lm.tasks import IGNORE_INDEX, TASKS, Example, collate, get_task, sample_length
from lrnn_lm.tasks.groups import transpositions
from lrnn_lm.tasks.metrics import (
    accuracy,
    correct_counts,
    final_answer_accuracy,
    scaled_accuracy,
)
from lrnn_lm.tasks.tokenizer import task_tokenizer

REPO = Path(__file__).resolve().parents[1]
CASES = [(seed, index, length) for seed in (0, 7) for index in range(12) for length in (1, 2, 3, 5, 8, 13, 40)]


def apply_then(a, b):
    """Explicit composition, written independently of the generator: apply ``a``, then ``b``."""
    return tuple(b[a[i]] for i in range(len(a)))


def perm(name):
    return tuple(int(c) for c in name)


def targets(e):
    return [(i, y) for i, y in enumerate(e.labels) if y != IGNORE_INDEX]


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize("seed,index,length", CASES)
def test_parity_matches_counting(seed, index, length):
    task = get_task("parity")
    e = task.example(seed, index, length)
    tokens = task.decode(e.input_ids)
    assert len(e.input_ids) == len(e.labels) == length + 2
    assert tokens[length] == "=" and set(tokens[:length]) <= {"0", "1"}
    assert tokens[-1] == str(tokens[:length].count("1") % 2)
    assert targets(e) == [(length + 1, e.input_ids[-1])]  # one target, on the answer


# ---------------------------------------------------------------- modular arithmetic


@pytest.mark.parametrize("name", ["mod_arith", "mod_arith_brackets"])
def test_mod_arith_matches_python_eval(name):
    task = get_task(name)
    disagree_left_to_right = 0
    for seed, index, length in CASES:
        e = task.example(seed, index, length)
        tokens = task.decode(e.input_ids)
        expression = tokens[:-2]
        assert tokens[-2] == "=" and len(expression) == task.valid_length(length)
        assert int(tokens[-1]) == eval(" ".join(expression)) % 5  # Python: integers, '*' before '+ -'
        assert targets(e) == [(len(e.input_ids) - 1, e.input_ids[-1])]
        if name == "mod_arith" and "*" in expression:
            value = int(expression[0])
            for op, x in zip(expression[1::2], expression[2::2]):
                value = eval(f"{value} {op} {x}")
            disagree_left_to_right += value % 5 != int(tokens[-1])
    if name == "mod_arith":
        assert disagree_left_to_right > 0  # precedence is exercised, so a left-to-right generator would fail


def test_mod_arith_lengths():
    plain, brackets = get_task("mod_arith"), get_task("mod_arith_brackets")
    assert [plain.valid_length(n) for n in (0, 1, 2, 3, 40, 41)] == [1, 1, 1, 3, 39, 41]
    for n in range(1, 30):
        e = brackets.example(3, n, n)
        expression = brackets.decode(e.input_ids)[:-2]
        assert len(expression) == n  # every length is valid with brackets
        depth = list(itertools.accumulate({"(": 1, ")": -1}.get(t, 0) for t in expression))
        assert min(depth, default=0) >= 0 and (not depth or depth[-1] == 0)
    mult = get_task("mod_arith_brackets", mult=True)
    assert any("*" in mult.decode(mult.example(0, i, 30).input_ids) for i in range(20))
    assert not any("*" in brackets.decode(brackets.example(0, i, 30).input_ids) for i in range(20))
    assert get_task("mod_arith", modulus=7).chance == pytest.approx(1 / 7)


# ---------------------------------------------------------------- groups


def test_composition_order_by_hand():
    # Swap 0,1 first, then swap 1,2: 0 -> 1 -> 2, 1 -> 0, 2 -> 1.
    assert apply_then((1, 0, 2), (0, 2, 1)) == (2, 0, 1)
    group = get_task("s3").group
    a, b = group.names.index("102"), group.names.index("021")
    assert group.names[group.table[a][b]] == "201" and group.names[group.table[b][a]] == "120"


@pytest.mark.parametrize("name,options", [("s3", {}), ("s5", {}), ("a5", {}), ("s5", {"generators": "swaps"})])
def test_group_running_products(name, options):
    task = get_task(name, **options)
    for seed, index, length in CASES:
        e = task.example(seed, index, length)
        words = task.decode(e.input_ids)
        assert words[-1] == "=" and len(words) == length + 1
        assert e.labels[0] == IGNORE_INDEX and all(y != IGNORE_INDEX for y in e.labels[1:])  # target everywhere
        state = None
        for t, word in enumerate(words[:-1]):
            state = perm(word) if state is None else apply_then(state, perm(word))
            assert perm(task.vocab[e.labels[t + 1]]) == state
    assert task.chance == pytest.approx(1 / {"s3": 6, "s5": 120, "a5": 60}[name])


def test_group_generators():
    for generators, moved in (("swaps", {2}), ("swaps_3cycles", {2, 3})):
        task = get_task("s5", generators=generators)
        words = [w for i in range(30) for w in task.decode(task.example(0, i, 20).input_ids)[:-1]]
        # A transposition moves exactly 2 points, a 3-cycle exactly 3.
        assert {sum(a != i for i, a in enumerate(perm(w))) for w in words} == moved
    a5 = get_task("a5")
    for w in a5.group.names:
        p = perm(w)
        inversions = sum(p[i] > p[j] for i, j in itertools.combinations(range(5), 2))
        assert inversions % 2 == 0
    assert len(a5.group.names) == 60


def test_cyclic_control():
    task = get_task("z60")
    assert get_task("cyclic", m=7).name == "z7" and get_task("z7").vocab == get_task("cyclic", m=7).vocab
    for seed, index, length in CASES:
        e = task.example(seed, index, length)
        values = [int(w) for w in task.decode(e.input_ids[:-1])]
        assert [int(task.vocab[y]) for _, y in targets(e)] == [sum(values[: t + 1]) % 60 for t in range(length)]


def test_transpositions_compose_to_each_element():
    for p in itertools.permutations(range(5)):
        ts = transpositions(p)
        assert len(ts) <= 4 and all(sum(a != i for i, a in enumerate(t)) == 2 for t in ts)
        product = tuple(range(5))
        for t in ts:
            product = apply_then(product, t)
        assert product == p


def test_s5_spelled_over_four_tokens():
    task = get_task("s5", spell=True)
    assert task.label == "s5[spell=True]"
    assert [task.valid_length(n) for n in (1, 4, 7, 8, 41)] == [4, 4, 4, 8, 40]
    for seed, index, length in CASES:
        e = task.example(seed, index, length)
        words = task.decode(e.input_ids)[:-1]
        n = task.valid_length(length)
        assert len(words) == n
        assert [i for i, _ in targets(e)] == list(range(4, n + 1, 4))  # target after each 4-token element
        state = tuple(range(5))
        for k, (_, y) in enumerate(targets(e)):
            chunk = [perm(w) for w in words[4 * k : 4 * k + 4]]
            assert all(sum(a != i for i, a in enumerate(c)) in (0, 2) for c in chunk)  # swaps or identity
            for c in chunk:
                state = apply_then(state, c)
            assert perm(task.vocab[y]) == state


# ---------------------------------------------------------------- determinism, lengths, collation


@pytest.mark.parametrize("name", sorted(TASKS))
def test_examples_are_pure_functions_of_seed_index_length(name):
    task = get_task(name)
    first = [task.example(5, i, 24) for i in range(8)]
    assert first == [get_task(name).example(5, i, 24) for i in range(8)]
    assert first != [task.example(6, i, 24) for i in range(8)]
    assert first != [task.example(5, i, 24, split="test") for i in range(8)]
    assert len({tuple(e.input_ids) for e in first}) > 1
    assert all(len(e.input_ids) == len(e.labels) for e in first)
    assert max(max(e.input_ids) for e in first) < task.vocab_size and task.vocab[task.pad_id] == "<pad>"


def test_sample_length():
    lengths = [sample_length(3, i, 3, 40) for i in range(500)]
    assert lengths == [sample_length(3, i, 3, 40) for i in range(500)]
    assert min(lengths) == 3 and max(lengths) == 40
    assert lengths != [sample_length(4, i, 3, 40) for i in range(500)]
    with pytest.raises(ValueError):
        sample_length(0, 0, 5, 4)


def test_collate_right_pads():
    batch = collate([Example([1, 2, 3], [-100, 5, 6]), Example([4], [7])], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 5, 6], [7, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_labels_follow_the_hf_shift():
    # The model's own loss must equal cross-entropy of logits[p - 1] against labels[p] at the target positions.
    task = get_task("parity")
    e = task.example(0, 0, 6)
    torch.manual_seed(0)
    model = LRNNForCausalLM(LRNNConfig(vocab_size=task.vocab_size, hidden_size=16, num_hidden_layers=1, num_heads=2))
    out = model(torch.tensor([e.input_ids]), labels=torch.tensor([e.labels]))
    ((p, y),) = targets(e)
    assert out.loss.item() == pytest.approx(F.cross_entropy(out.logits[0, p - 1 : p], torch.tensor([y])).item())


def test_render_and_tokenizer_agree_with_ids():
    for name in ["parity", "mod_arith_brackets", "s5"]:
        task = get_task(name)
        tok = task_tokenizer(task)
        e = task.example(1, 2, 9)
        context, answer, choices = task.render(e)
        p, y = targets(e)[-1]
        assert tok(context + " " + answer)["input_ids"] == e.input_ids[:p] + [y]
        assert answer in choices and choices == task.answer_tokens


# ---------------------------------------------------------------- metrics


def test_metrics_on_hand_made_logits():
    labels = torch.tensor([[-100, 2, -100, 1], [-100, -100, 0, 0]])
    logits = torch.zeros(2, 4, 3)
    # Position t predicts labels[t + 1]: row 0 right at t=0 (2) and wrong at t=2 (predicts 0, not 1);
    # row 1 right at t=1 and t=2. The last position's logits are never scored.
    logits[0, 0, 2] = logits[0, 2, 0] = 1
    logits[1, 1, 0] = logits[1, 2, 0] = 1
    logits[0, 3, 1] = logits[1, 3, 2] = 5
    assert correct_counts(logits, labels) == (3, 4)
    assert accuracy(logits, labels) == pytest.approx(0.75)
    assert final_answer_accuracy(logits, labels) == pytest.approx(0.5)
    # With the argmax restricted to {1, 2}, row 0 at t=2 now picks 1 (right) and row 1 can no longer say 0.
    logits[0, 2, 1] = 0.5
    assert correct_counts(logits, labels) == (3, 4)
    assert correct_counts(logits, labels, answer_ids=[1, 2]) == (2, 4)
    assert final_answer_accuracy(logits, labels, answer_ids=[1, 2]) == pytest.approx(0.5)


def test_scaled_accuracy():
    assert scaled_accuracy(0.5, 0.5) == 0 and scaled_accuracy(1.0, 0.2) == 1
    assert scaled_accuracy(0.6, 0.2) == pytest.approx(0.5) and scaled_accuracy(0.0, 0.5) == -1


# ---------------------------------------------------------------- evaluation command and lm-eval export


def test_evaluate_command_end_to_end(tmp_path):
    task = get_task("parity")
    ckpts = []
    for i, mixer in enumerate(["deltanet", "mamba"]):
        torch.manual_seed(i)
        config = LRNNConfig(vocab_size=task.vocab_size, hidden_size=16, num_hidden_layers=1, num_heads=2, mixer=mixer)
        LRNNForCausalLM(config).save_pretrained(tmp_path / mixer)
        ckpts.append(str(tmp_path / mixer))
    out = tmp_path / "out"
    args = ["--task", "parity", "--lengths", "8,12", "--num", "20", "--batch_size", "8", "--output", str(out)]
    evaluate_main(["--checkpoints", ckpts[0], *args, "--device", "cpu"])
    results = evaluate_main(["--checkpoints", ckpts[1], *args, "--names", "mamba tiny"])
    models = results["parity"]["models"]
    assert list(models) == ["deltanet", "mamba tiny"]  # the second run adds to the first (same test set)
    for model in models.values():
        rows = model["per_length"]
        assert set(rows) == {"8", "12"} and all(r["n"] == r["n_targets"] == 20 for r in rows.values())
        assert all(r["scaled_acc"] == pytest.approx(2 * r["acc"] - 1) for r in rows.values())
        assert model["mean_scaled_acc"] == pytest.approx(sum(r["scaled_acc"] for r in rows.values()) / 2)
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "parity.png").stat().st_size > 1000
    table = (out / "table.md").read_text()
    assert "| model | parity |" in table and "| mamba tiny |" in table and "| deltanet |" in table

    # The reported accuracy is the model's: recompute one bucket directly.
    model = LRNNForCausalLM.from_pretrained(ckpts[0]).eval()
    batch = collate([task.example(1234, i, 12, split="test") for i in range(20)], task.pad_id)
    with torch.no_grad():
        logits = model(batch["input_ids"]).logits
    assert models["deltanet"]["per_length"]["12"]["acc"] == pytest.approx(
        accuracy(logits, batch["labels"], task.answer_ids)
    )


def test_lm_eval_export_is_current_and_consistent():
    folder = REPO / "configs" / "lm_eval_tasks"
    for name in EXPORTED:
        committed = [json.loads(line) for line in (folder / f"lrnn_{name}.jsonl").read_text().splitlines()]
        assert committed[:40] == export_rows(name, 40, 8, 40, 2024)  # regenerate with the export defaults
        assert len(committed) == 256
        choices = get_task(name).answer_tokens
        assert all(choices[row["answer"]] == row["answer_text"] for row in committed)
        config = (folder / f"lrnn_{name}.yaml").read_text()
        assert f"task: lrnn_{name}\n" in config and f"configs/lm_eval_tasks/lrnn_{name}.jsonl" in config
