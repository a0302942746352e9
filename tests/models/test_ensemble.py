"""Several networks as one graph: the mean log-softmax, the shared frozen trunk, and its ONNX export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecgdx.errors import ModelError
from ecgdx.models import create_model
from ecgdx.models.ensemble import LogSoftmaxMean, shared_frozen_stages

pytest.importorskip("onnx")


def _lite_member(seed: int, frozen_stages: int = 3) -> torch.nn.Module:
    """An efficientnet_lite0 with the stem and first ``frozen_stages`` stages as another member's
    (fixed seed 0), and its other tensors drawn from ``seed``, as two fine-tunes of one recipe are."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", frozen_stages=frozen_stages)
    torch.manual_seed(100 + seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            frozen = name.startswith(("conv_stem", "bn1.")) or any(
                name.startswith(f"blocks.{k}.") for k in range(frozen_stages))
            if frozen or not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            else:
                tensor.add_(0.05 * torch.randn_like(tensor))
    return model.eval()


@pytest.fixture(scope="module")
def members():
    return [_lite_member(1), _lite_member(2)]


def test_the_output_is_the_mean_of_the_members_log_softmax(members):
    x = torch.rand(3, 1, 64, 128)
    with torch.inference_mode():
        expected = torch.stack([torch.log_softmax(m(x), dim=1) for m in members]).mean(dim=0)
        got = LogSoftmaxMean(members)(x)
    assert got.shape == (3, 4)
    assert torch.allclose(got, expected, atol=1e-5)
    # The two members disagree, so the mean is neither of them.
    assert not torch.allclose(got, torch.log_softmax(members[0](x), dim=1), atol=1e-3)


def test_identical_frozen_stages_are_shared_and_anything_else_is_not(members):
    assert shared_frozen_stages(members) == 3
    ensemble = LogSoftmaxMean(members)
    assert ensemble.shared_stages == 3
    shared = sum(p.numel() for p in ensemble.trunk.parameters())
    apart = sum(p.numel() for m in members for p in m.parameters())
    assert sum(p.numel() for p in ensemble.parameters()) == apart - shared
    # One frozen tensor differs: nothing may be shared, or the second member would read the
    # first member's features.
    other = _lite_member(3)
    with torch.no_grad():
        other.blocks[1][0].conv_pw.weight.add_(1e-3)
    assert shared_frozen_stages([members[0], other]) == 0
    x = torch.rand(2, 1, 64, 128)
    with torch.inference_mode():
        expected = torch.stack([torch.log_softmax(m(x), dim=1) for m in (members[0], other)]).mean(dim=0)
        assert torch.allclose(LogSoftmaxMean([members[0], other])(x), expected, atol=1e-5)
    # Fewer frozen stages in one member: only those are shared.
    assert shared_frozen_stages([members[0], _lite_member(4, frozen_stages=2)]) == 2


def test_networks_without_frozen_stages_share_nothing_and_one_member_is_refused():
    torch.manual_seed(0)
    nets = [create_model("seed_cnn").eval(), create_model("seed_cnn").eval()]
    assert shared_frozen_stages(nets) == 0
    with pytest.raises(ModelError, match="at least 2"):
        LogSoftmaxMean(nets[:1])
    with pytest.raises(ModelError, match="inference"):
        LogSoftmaxMean(nets).train()


def _checkpoint(path, model, fingerprint="sha256:same"):
    from ecgdx import __version__
    from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES
    from ecgdx.page.preprocessing import PreprocessSpec
    from ecgdx.training import CHECKPOINT_FORMAT

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "ecgdx_version": __version__, "model": dict(model.ecgdx_config),
                "classes": list(CLASS_KEYS), "display_names": dict(DISPLAY_NAMES),
                "preprocess": PreprocessSpec(height=64, width=128, layout="canonical").to_dict(),
                "config": {"name": "test"}, "data_fingerprint": fingerprint, "parameters": 0,
                "state_dict": model.state_dict(), "temperature": 1.0}, path)
    return path


def test_export_is_one_graph_equal_to_the_mean_and_describes_its_members(members, tmp_path, capsys):
    from ecgdx.cli import main
    from ecgdx.export import export_ensemble, open_session, read_model_metadata

    a = _checkpoint(tmp_path / "a" / "best.pt", members[0])
    b = _checkpoint(tmp_path / "b" / "best.pt", members[1])
    out = tmp_path / "pair.onnx"
    assert main(["export", str(a), str(b), "--out", str(out)]) == 0
    assert "2 x efficientnet_lite0" in capsys.readouterr().out
    meta = read_model_metadata(out)
    assert meta["model"]["name"] == "2 x efficientnet_lite0"
    assert meta["model"]["shared_stages"] == 3
    assert len(meta["model"]["members"]) == 2
    assert meta["model_version"].startswith("efficientnet_lite0x2-")
    x = np.random.default_rng(0).random((2, 1, 64, 128), dtype=np.float32)
    got = open_session(out).run(None, {"image": x})[0]
    with torch.inference_mode():
        expected = torch.stack([torch.log_softmax(m(torch.from_numpy(x)), dim=1) for m in members]).mean(0)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    # The order of the members is part of the version; the same members give the same version.
    again = export_ensemble([a, b], tmp_path / "again.onnx", verbose=False)["metadata"]["model_version"]
    swapped = export_ensemble([b, a], tmp_path / "swapped.onnx", verbose=False)["metadata"]["model_version"]
    assert again == meta["model_version"] != swapped
    assert json.loads(json.dumps(meta))  # plain JSON all the way down


def test_members_that_read_other_pages_are_refused(members, tmp_path):
    from ecgdx.export import export_ensemble

    a = _checkpoint(tmp_path / "a.pt", members[0])
    b = _checkpoint(tmp_path / "b.pt", members[1], fingerprint="sha256:other")
    with pytest.raises(ModelError, match="data_fingerprint"):
        export_ensemble([a, b], tmp_path / "x.onnx", verbose=False)
    with pytest.raises(ModelError, match="at least 2"):
        export_ensemble([a], tmp_path / "x.onnx", verbose=False)
    assert not (tmp_path / "x.onnx").exists()
