"""What is specific to the gated_deltanet and deltaproduct mixers (the registry-driven tests in test_modeling,
test_generation and test_eval cover the rest): the signed gate, its validation, n_h = 1 against Gated DeltaNet,
and the DeltaProduct spectrum against a brute-force eigendecomposition."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lrnn_lm import LRNNConfig, LRNNForCausalLM
from lrnn_lm.kernels.testing import rel_rmse
from lrnn_lm.layers import get_mixer
from lrnn_lm.layers.deltaproduct import householder_product_eigenvalues
from lrnn_lm.layers.gates import gated_delta_alpha

from .models import RANGES, tiny_model
from .test_generation import stepwise_logits

# Models and inputs on the --device device (tests/conftest.py).
pytestmark = pytest.mark.on_device

GATED = ["gated_deltanet", "deltaproduct"]
TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gated_delta_alpha_maps_decay():
    decay = torch.tensor([0.0, 0.25, 0.5, 1.0])
    for eigval_range in RANGES:
        torch.testing.assert_close(gated_delta_alpha(decay, eigval_range, False), decay)
    torch.testing.assert_close(gated_delta_alpha(decay, "[-1,1]", True), torch.tensor([-1.0, -0.5, 0.0, 1.0]))
    with pytest.raises(ValueError, match="negative_gate"):
        gated_delta_alpha(decay, "[0,1]", True)


@pytest.mark.parametrize("mixer", GATED)
def test_negative_gate_is_two_alpha_minus_one(mixer):
    """Same weights, the signed gate on: alpha becomes 2 alpha - 1, beta is unchanged, and the model differs."""
    plain, signed = (tiny_model(mixer=mixer, negative_gate=flag) for flag in (False, True))
    hidden = torch.randn(2, 7, 24)
    with torch.no_grad():
        a, b = (
            plain.model.layers[0].mixer.project(hidden, None, None, None),
            signed.model.layers[0].mixer.project(hidden, None, None, None),
        )
    torch.testing.assert_close(b[3], a[3])  # beta
    torch.testing.assert_close(b[4], 2 * a[4] - 1)  # alpha
    assert (a[4] > 0).all() and (b[4] < 0).any()
    ids = torch.randint(0, 61, (2, 11))
    with torch.no_grad():
        assert rel_rmse(signed(ids).logits, plain(ids).logits) > 1e-3


@pytest.mark.parametrize("mixer", GATED)
def test_negative_gate_config_validation(mixer):
    with pytest.raises(ValueError, match=r"LRNNConfig\.negative_gate: .*\[-1,1\]"):
        LRNNConfig(mixer=mixer, eigval_range="[0,1]", negative_gate=True)
    with pytest.raises(ValueError, match=r"LRNNConfig\.negative_gate: must be true or false"):
        LRNNConfig(mixer=mixer, negative_gate="yes")
    LRNNConfig(mixer=mixer, eigval_range="[-1,1]", negative_gate=True)
    # The combination matters only where a layer uses the field.
    LRNNConfig(mixer="deltanet", eigval_range="[0,1]", negative_gate=True)


def test_deltaproduct_signed_gate_needs_the_gate():
    with pytest.raises(ValueError, match=r"LRNNConfig\.negative_gate: needs the gate"):
        LRNNConfig(mixer="deltaproduct", use_forget_gate=False, negative_gate=True)


@pytest.mark.parametrize("field,value", [("gdn_expand_v", 0.3), ("num_householder", 0), ("dt_min", 0.5)])
def test_shape_fields_fail_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"LRNNConfig\.{field}:"):
        LRNNConfig(mixer="deltaproduct", hidden_size=24, num_heads=2, **{field: value})


@pytest.mark.parametrize("eigval_range,negative_gate", [("[0,1]", False), ("[-1,1]", False), ("[-1,1]", True)])
def test_deltaproduct_with_one_householder_is_gated_deltanet(eigval_range, negative_gate):
    kw = dict(eigval_range=eigval_range, negative_gate=negative_gate)
    gdn = tiny_model(mixer="gated_deltanet", **kw)
    dp = LRNNForCausalLM(tiny_model(mixer="deltaproduct", num_householder=1, **kw).config).eval()
    dp.load_state_dict(gdn.state_dict())  # same parameter names and shapes with n_h = 1
    ids = torch.randint(0, 61, (2, 13))
    with torch.no_grad():
        assert rel_rmse(dp(ids).logits, gdn(ids).logits) <= TOL
        hidden = torch.randn(2, 5, 24)
        ev_dp = dp.model.layers[0].mixer.transition_eigenvalues(hidden, None, None)
        ev_gdn = gdn.model.layers[0].mixer.transition_eigenvalues(hidden, None, None)
    torch.testing.assert_close(ev_dp[..., 0], ev_gdn)


def _char_poly(values: np.ndarray) -> np.ndarray:
    return np.poly(values)


@pytest.mark.parametrize("n_h", [2, 3])
@pytest.mark.parametrize("negative_gate", [False, True])
def test_deltaproduct_spectrum_against_brute_force(n_h, negative_gate):
    """The full head_dim x head_dim transition alpha H_{n-1}..H_0, eigendecomposed: its spectrum is the
    reported n_h values and head_dim - n_h copies of alpha (head_dim 4, so the span is a proper subspace)."""
    model = tiny_model(mixer="deltaproduct", num_householder=n_h, head_dim=4, negative_gate=negative_gate)
    mixer = model.model.layers[0].mixer
    hidden = torch.randn(2, 6, 24)
    with torch.no_grad():
        _, k, _, beta, alpha, _ = mixer.project(hidden, None, None, None)
        reported = mixer.transition_eigenvalues(hidden, None, None)  # [B, T, H, n_h]
    k, beta, alpha = k.double(), beta.double(), alpha.double()
    values = householder_product_eigenvalues(k.transpose(2, 3), beta.transpose(2, 3))
    K = k.shape[-1]
    eye = torch.eye(K, dtype=torch.float64)
    for b in range(2):
        for t in range(6):
            for h in range(mixer.num_heads):
                full = eye.clone()
                for j in range(n_h):
                    kj = k[b, t, j, h]
                    full = (eye - beta[b, t, j, h] * torch.outer(kj, kj)) @ full
                full = alpha[b, t, h] * full
                expected = torch.linalg.eigvals(full).numpy()
                ours = np.concatenate(
                    [alpha[b, t, h].item() * values[b, t, h].numpy(), np.full(K - n_h, alpha[b, t, h].item())]
                )
                np.testing.assert_allclose(_char_poly(ours), _char_poly(expected), atol=1e-6)
    torch.testing.assert_close(reported, (alpha[..., None] * values.real).float())


def test_deltaproduct_two_steps_closed_form_matches_eigensolver_and_stays_nonnegative():
    torch.manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(500, 2, 5, dtype=torch.float64), dim=-1)
    for top in (1.0, 2.0):
        beta = top * torch.rand(500, 2, dtype=torch.float64)
        beta[:50] = top  # saturated steps: exact zeros (beta = 1) or exact reflections (beta = 2)
        closed = householder_product_eigenvalues(k, beta)
        general = householder_product_eigenvalues(
            torch.cat([k, torch.zeros_like(k[:, :1])], 1), torch.cat([beta, torch.zeros_like(beta[:, :1])], 1)
        )  # n = 3 with a third step beta = 0 (the identity): the eigensolver path, plus an eigenvalue 1
        for c, g in zip(closed.numpy(), general.numpy()):
            np.testing.assert_allclose(_char_poly(np.append(c, 1.0)), _char_poly(g), atol=1e-9)
        if top == 1.0:  # [0,1]: a product of two PSD contractions has real eigenvalues in [0, 1]
            assert (closed.imag == 0).all() and (closed.real >= 0).all() and (closed.real <= 1).all()
        else:
            assert (closed.abs() <= 1 + 1e-12).all()


@pytest.mark.parametrize(
    "mixer,kw",
    [
        ("gated_deltanet", {}),
        ("deltaproduct", {}),
        ("deltaproduct", {"use_forget_gate": False}),
        ("gated_deltanet", {"use_short_conv": False}),
        ("deltaproduct", {"num_householder": 3, "use_short_conv": False}),
    ],
)
def test_signed_gate_and_variants_decode_and_left_pad(mixer, kw):
    """The registry tests run the defaults; here the signed gate, no forget gate, no conv, n_h = 3."""
    if kw.get("use_forget_gate", True):
        kw = {**kw, "negative_gate": True}
    model = tiny_model(mixer=mixer, eigval_range="[-1,1]", **kw)
    ids = torch.randint(1, 61, (2, 15))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        assert rel_rmse(stepwise_logits(model, ids, 4, 3), full) <= TOL
        padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], 1)
        mask = torch.cat([torch.zeros(2, 3), torch.ones(2, 15)], 1).long()
        assert rel_rmse(model(padded, attention_mask=mask, use_cache=False).logits[:, 3:], full) <= TOL
        seqs, cu = [ids[:1, :9], ids[1:, :6]], torch.tensor([0, 9, 15])
        packed = model(torch.cat(seqs, 1), cu_seqlens=cu, use_cache=False).logits
        for s, seq in zip(cu[:-1], seqs):
            assert rel_rmse(packed[:, s : s + seq.shape[1]], model(seq, use_cache=False).logits) <= TOL


@pytest.mark.parametrize("mixer", GATED)
def test_init_follows_fla(mixer):
    torch.manual_seed(0)
    model = LRNNForCausalLM(LRNNConfig(mixer=mixer, hidden_size=64, num_heads=32, num_hidden_layers=1, vocab_size=10))
    m = model.model.layers[0].mixer
    A = m.A_log.exp()
    assert (A >= 1).all() and (A <= 16).all() and A.std() > 2
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert (dt >= 0.001 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    assert {"A_log", "dt_bias"} <= {n.rsplit(".", 1)[-1] for n in model.no_weight_decay()}


@pytest.mark.parametrize("mixer", GATED)
def test_from_pretrained_without_importing_lrnn_lm(tmp_path, mixer):
    """A fresh process loads the checkpoint through its remote-code shims only and gets the same logits."""
    model = tiny_model(mixer=mixer, negative_gate=True)
    ids = torch.randint(0, 61, (1, 9))
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.save({"ids": ids, "logits": model(ids).logits}, tmp_path / "ref.pt")
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()\n"
        "assert 'lrnn_lm.layers' in sys.modules\n"
        f"ref = torch.load({str(tmp_path / 'ref.pt')!r})\n"
        "with torch.no_grad():\n"
        "    torch.testing.assert_close(m(ref['ids']).logits, ref['logits'], rtol=0, atol=0)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.triton_interpret
@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="fla's layers run their Triton kernels: TRITON_INTERPRET=1 python -m pytest -m triton_interpret "
    "tests/test_gated_mixers.py",
)
@pytest.mark.parametrize("eigval_range", RANGES)
@pytest.mark.parametrize("mixer,kw", [("gated_deltanet", {}), ("deltaproduct", {}), ("deltaproduct", {"gate": False})])
def test_same_function_as_fla_layer(mixer, kw, eigval_range):
    """Peer oracle: fla's GatedDeltaNet / GatedDeltaProduct with the same weights (fla's separate q/k/v convs
    concatenated into our one conv; every other parameter has the same name) give the same output."""
    pytest.importorskip("fla", reason="flash-linear-attention (fla) is not installed")
    from fla.layers.gated_deltanet import GatedDeltaNet
    from fla.layers.gated_deltaproduct import GatedDeltaProduct

    from .kernels.triton_interpreter import interpreter_shims

    d, H, K, neg, gate = 32, 2, 8, eigval_range == "[-1,1]", kw.get("gate", True)
    shape = dict(hidden_size=d, expand_v=2, head_dim=K, num_heads=H, allow_neg_eigval=neg, layer_idx=0)
    if mixer == "gated_deltanet":
        peer = GatedDeltaNet(**shape)
    else:
        peer = GatedDeltaProduct(**shape, use_forget_gate=gate, num_householder=2)
    with torch.no_grad():
        for p in peer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    extra = {} if mixer == "gated_deltanet" else {"num_householder": 2, "use_forget_gate": gate}
    config = LRNNConfig(
        mixer=mixer, hidden_size=d, num_heads=H, head_dim=K, gdn_expand_v=2, num_hidden_layers=1, vocab_size=10,
        eigval_range=eigval_range, **extra,
    )  # fmt: skip
    ours = get_mixer(mixer)(config, 0).eval()
    weights = dict(peer.state_dict())
    weights["conv.conv1d.weight"] = torch.cat([weights.pop(f"{n}_conv1d.weight") for n in "qkv"], 0)
    ours.load_state_dict(weights, strict=True)
    x = torch.randn(2, 11, d)
    with interpreter_shims(), torch.no_grad():
        # Eval mode, no grad and T <= 64: fla runs its fp32 fused_recurrent kernel.
        expected = peer.eval()(x)[0]
    with torch.no_grad():
        assert rel_rmse(ours(x), expected) <= TOL


def test_three_unsigned_householders_can_have_negative_real_parts():
    """Documented in deltaproduct.py: [0,1] is sign-free for n_h <= 2 only; with three steps a complex pair can
    have a negative real part (products of three PSD contractions)."""
    torch.manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(20000, 3, 4, dtype=torch.float64), dim=-1)
    values = householder_product_eigenvalues(k, torch.rand(20000, 3, dtype=torch.float64))
    assert values.real.min() < -0.01 and (values.abs() <= 1 + 1e-12).all()
    two = householder_product_eigenvalues(k[:, :2], torch.rand(20000, 2, dtype=torch.float64))
    assert (two.real >= 0).all() and (two.imag == 0).all()
