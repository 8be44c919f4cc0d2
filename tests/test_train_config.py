import pytest

from lrnn_lm.training.config import ConfigError, load_config, parse_overrides
from lrnn_lm.training.schedule import lr_at


def test_overrides_are_typed():
    argv = ["--optim.lr=1e-3", "--data.seq_len", "128", "--model.mixer=mamba", "--train.tokens_per_step=4096"]
    cfg = load_config(argv)
    assert cfg.optim.lr == 1e-3 and cfg.data.seq_len == 128 and cfg.model == {"mixer": "mamba"}
    assert cfg.train.tokens_per_step == 4096


def test_exponents_without_a_dot_are_numbers_in_untyped_sections():
    """The model section is passed on as written (no dataclass to coerce it): `1e-5` must already be a float."""
    cfg = load_config(["--model={mixer: mamba2, dt_min: 1e-5}", "--model.dt_max=2E-4"])
    assert cfg.model["dt_min"] == 1e-5 and cfg.model["dt_max"] == 2e-4
    _, overrides = parse_overrides(["--a=1e5x", "--b=12"])
    assert overrides == [("a", "1e5x"), ("b", 12)]


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "optim:\n  lr: 3e-4\ntrain:\n  max_steps: 7\ndata:\n  sources:\n    - path: a.jsonl\n      weight: 2\n"
    )
    cfg = load_config(["--config", str(path), "--train.max_steps=9"])
    assert cfg.optim.lr == 3e-4 and cfg.train.max_steps == 9
    assert cfg.data.sources[0].path == "a.jsonl" and cfg.data.sources[0].weight == 2.0


def test_task_section():
    cfg = load_config(["--data.task={name: parity, min_len: 3, max_len: 40, seed: 1}"])
    assert cfg.data.task.name == "parity" and cfg.data.task.max_len == 40


@pytest.mark.parametrize(
    "argv,key",
    [
        (["--optim.lrr=1"], "optim.lrr"),
        (["--optim.lr=abc"], "optim.lr"),
        (["--data.seq_len=0"], "data.seq_len"),
        (["--optim.schedule=step"], "optim.schedule"),
        (["--data.sources=[{path: x.jsonl, foo: 1}]"], r"data.sources\[0\].foo"),
        (["--data.sources=[{path: x.jsonl, weight: -1}]"], r"data.sources\[0\].weight"),
        (["--train.micro_batch_size=two"], "train.micro_batch_size"),
        (["--config", "does-not-exist.yaml"], "--config"),
        (["--resume=/no/such/checkpoint"], "resume"),
        (["--data.task={name: parity, min_len: 9, max_len: 3}"], "data.task.min_len"),
        (["--bogus=1"], "bogus"),
    ],
)
def test_bad_configs_name_the_key(argv, key):
    with pytest.raises(ConfigError, match=key):
        load_config(argv)


def test_parse_overrides_rejects_positional():
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_overrides(["lr=1"])


def test_schedule_warmup_then_cosine_to_min():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110, schedule="cosine")
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55) and lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(60, **{**kw, "schedule": "linear"}) == pytest.approx(0.55)
