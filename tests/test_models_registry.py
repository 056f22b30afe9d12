"""The architecture registry, the study head, and the proof that EfficientNet-Lite's bundled ImageNet
weights are mapped correctly onto timm (against the reference implementation and on a cat photo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facederm.runtime.errors import ConfigError
from facederm.training.models import (
    ARCHS,
    INCEPTION_MEAN,
    FacedermClassifier,
    ProbabilityModel,
    StudyHead,
    create_model,
    default_preprocessing,
    get_arch,
)

STUDY_FIVE = {"resnet50", "inception_v3", "densenet121", "xception", "inception_resnet_v2"}
MOBILE = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv3_large_100"}


def test_registry_holds_the_study_five_and_the_mobile_archs():
    assert {name for name, spec in ARCHS.items() if spec.family == "study"} >= STUDY_FIVE
    assert {name for name, spec in ARCHS.items() if spec.family == "mobile"} >= MOBILE
    # The study's Xception is the Keras one: timm's legacy_xception, not the aligned xception41.
    assert get_arch("xception").timm_name == "legacy_xception"
    import timm

    for spec in ARCHS.values():
        assert timm.is_model(spec.timm_name), spec.timm_name


def test_lite_archs_bundle_weights_and_use_half_normalization():
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        spec = get_arch(name)
        assert spec.local_weights is not None and Path(spec.local_weights()).is_file()
        assert spec.mean == INCEPTION_MEAN and spec.std == (0.5, 0.5, 0.5)
    assert get_arch("resnet50").local_weights is None
    pre = default_preprocessing("efficientnet_lite0", 300)
    assert (pre.crop, pre.resize_shorter, pre.mean) == (300, 300, (0.5, 0.5, 0.5))


@pytest.mark.parametrize("arch", ["mobilenetv3_small_050", "resnet10t"])
def test_study_head_on_small_backbones(arch):
    model = create_model(arch, 6).eval()
    assert isinstance(model, FacedermClassifier) and isinstance(model.head, StudyHead)
    assert model.head.fc.out_features == 1024 and model.head.conv.kernel_size == (1, 1)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.ndim == 4 and features.shape[1] == model.backbone.num_features
    assert logits.shape == (3, 6)
    probs = ProbabilityModel(model, default_preprocessing(arch, 64))(torch.rand(3, 3, 64, 64) * 255)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_unknown_arch_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean resnet50"):
        create_model("resnet5O", 3)


def test_imagenet_weights_refused_for_archs_without_bundled_weights():
    with pytest.raises(ConfigError, match="no bundled ImageNet weights"):
        create_model("resnet10t", 3, imagenet_weights=True)


# ------------------------------------------------------------------ EfficientNet-Lite mapping proof
def _lite0_imagenet_model() -> tuple[torch.nn.Module, str]:
    """timm backbone with our mapped weights + the checkpoint's ImageNet classifier: a 1000-class model."""
    from facederm.training.weights import imagenet_classifier_state

    path = get_arch("efficientnet_lite0").local_weights()
    backbone = create_model("efficientnet_lite0", 2, imagenet_weights=True).backbone.eval()
    fc = torch.nn.Linear(backbone.num_features, 1000)
    fc.load_state_dict(imagenet_classifier_state(path))

    class ImageNetLite(torch.nn.Module):
        def forward(self, x):
            return fc(backbone.forward_features(x).mean(dim=(2, 3)))

    return ImageNetLite().eval(), path


def _chelsea(size: int = 224) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    from facederm.runtime.preprocess import resize_and_crop

    rgb = resize_and_crop(skimage_data.chelsea(), size)
    x = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32))[None] / 255.0
    return (x - 0.5) / 0.5


def test_lite0_mapping_matches_the_reference_implementation():
    reference_module = pytest.importorskip("efficientnet_lite_pytorch")
    ours, path = _lite0_imagenet_model()
    reference = reference_module.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    x = _chelsea()
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def test_lite0_mapping_sees_a_cat_in_chelsea():
    ours, _ = _lite0_imagenet_model()
    with torch.no_grad():
        top3 = ours(_chelsea()).topk(3).indices[0].tolist()
    assert set(top3) <= set(range(281, 286)), top3  # ImageNet 281-285: tabby, tiger cat, Persian, Siamese, Egyptian


@pytest.mark.parametrize("fusion", ["concat", "metablock"])
def test_linear_head_fuses_clinical_answers(fusion):
    """head_hidden=0: the class layer sits on the pooled features (plus the clinical embedding when concatenated);
    the clinical answers still change the logits through either fusion."""
    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_050", 4, head_hidden=0, clinical_features=5, clinical_fusion=fusion)
    model.eval()
    width = model.backbone.num_features
    assert model.head.classifier.in_features == width + (64 if fusion == "concat" else 0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        answered, unanswered = model(x, torch.ones(2, 5)), model(x)
    assert answered.shape == (2, 4) and not torch.allclose(answered, unanswered)
