"""The backbone family: EfficientNet-Lite0/1/2 with their offline ImageNet weights, torchvision-format
ResNets from a user's weights file or URL (checked tensor by tensor, sha256 recorded and re-checked),
and the detectors' per-backbone defaults."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from skimage import data

from oddspot.cli import cli
from oddspot.detectors.padim_head import PaDiMConfig
from oddspot.detectors.patchcore import PatchCore
from oddspot.detectors.patchcore_head import PatchCoreConfig
from oddspot.errors import OddspotError
from oddspot.features import FeatureExtractor, build_backbone
from oddspot.features.backbone import scale_pixels
from oddspot.features.efficientnet_lite import VARIANTS, EfficientNetLite0, efficientnet_lite, round_filters
from oddspot.features.resnet import SPECS, reference_shapes, resnet
from oddspot.features.weights import cached_path, resolve_weights
from oddspot.road.config import ModelConfig
from oddspot.runs.registry import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

# Parameter counts torchvision publishes for its models (classifier included).
TORCHVISION_PARAMETERS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "wide_resnet50_2": 68_883_240}
# The last MBConv block of each stage and its channels, read off the checkpoints' tensor names and shapes.
LITE_STAGES = {
    "efficientnet_lite1": ([0, 3, 6, 10, 14, 19, 20], [16, 24, 40, 80, 112, 192, 320]),
    "efficientnet_lite2": ([0, 3, 6, 10, 14, 19, 20], [16, 24, 48, 88, 120, 208, 352]),
}
STRIDES = [2, 4, 8, 16, 16, 32, 32]


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def random_state(name: str, upto: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict of `name` with random values, its layers up to `upto` (plus fc when 4)."""
    gen = torch.Generator().manual_seed(seed)
    keep = {f"layer{i}" for i in range(upto + 1, 5)} | ({"fc"} if upto < 4 else set())
    state = {}
    for key, shape in reference_shapes(name).items():
        if key.split(".")[0] in keep:
            continue
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        else:
            fan = math.prod(shape[1:]) or 1
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(fan)
    return state


# EfficientNet-Lite -------------------------------------------------------------------------------
def test_round_filters_follows_the_lite_builder():
    # channels * 1.1 rounded to a multiple of 8, bumped when more than 10% below the product
    assert [round_filters(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert [round_filters(c, 1.0) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 40, 80, 112, 192, 320]
    assert round_filters(12, 1.0) == 16 and round_filters(100, 1.0) == 104  # at least `divisor`; nearest multiple


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite_variant_loads_its_checkpoint_and_sees_a_cat(name):
    backbone = build_backbone(name, device="cpu")  # loads every tensor of the package's checkpoint, strictly
    size = VARIANTS[name].image_size
    with torch.inference_mode():
        top1 = int(backbone.model(backbone.preprocess(data.chelsea(), size)).argmax(1))
    assert 281 <= top1 <= 285  # ImageNet cat classes
    blocks, channels = LITE_STAGES[name]
    assert len(backbone.model._blocks) == blocks[-1] + 1
    stages = [f"stage{k}" for k in range(1, 8)]
    assert [backbone.module_name(s) for s in stages] == [f"_blocks.{b}" for b in blocks]
    ex = FeatureExtractor(backbone, stages)
    out = ex(backbone.preprocess(data.coffee(), 64))
    ex.close()
    assert [tuple(out[s].shape[1:]) for s in stages] == [(c, math.ceil(64 / st), math.ceil(64 / st))
                                                       for c, st in zip(channels, STRIDES)]


def test_lite0_is_unchanged():
    assert EfficientNetLite0.LAYERS["stage3"] == ("_blocks.4", 8, 40) and EfficientNetLite0.LAYERS["stage5"] == ("_blocks.10", 16, 112)
    assert len(EfficientNetLite0()._blocks) == 16
    config = PatchCoreConfig()
    assert (config.backbone, config.layers, config.image_size, config.weights) == ("efficientnet_lite0", ("stage3", "stage5"), 224, None)


def test_lite_with_a_foreign_checkpoint_names_the_first_bad_tensor(tmp_path):
    path = tmp_path / "lite1.pth"
    torch.save(efficientnet_lite("efficientnet_lite1", pretrained=False).state_dict(), path)
    with pytest.raises(OddspotError, match=r"lite1\.pth: weights do not fit the model: unexpected \d+ tensors \(first: _blocks\.16\."):
        efficientnet_lite("efficientnet_lite0", weights=path)


# detector defaults per backbone ------------------------------------------------------------------
@pytest.mark.parametrize("name, size, layers, padim_layers", [
    ("efficientnet_lite0", 224, ("stage3", "stage5"), ("stage2", "stage3", "stage5")),
    ("efficientnet_lite1", 240, ("stage3", "stage5"), ("stage2", "stage3", "stage5")),
    ("efficientnet_lite2", 260, ("stage3", "stage5"), ("stage2", "stage3", "stage5")),
    ("resnet18", 224, ("layer2", "layer3"), ("layer1", "layer2", "layer3")),
    ("wide_resnet50_2", 224, ("layer2", "layer3"), ("layer1", "layer2", "layer3")),
])
def test_config_defaults_follow_the_backbone(name, size, layers, padim_layers):
    config = PatchCoreConfig(backbone=name)
    assert (config.image_size, config.layers) == (size, layers)
    assert (PaDiMConfig(backbone=name).layers, PaDiMConfig(backbone=name).image_size) == (padim_layers, size)
    explicit = PatchCoreConfig(backbone=name, image_size=96, layers=("a", "b"))
    assert (explicit.image_size, explicit.layers) == (96, ("a", "b"))


@pytest.mark.parametrize("options, needle", [
    ({"backbone": "resnet34"}, "resnet34"),
    ({"weights": ""}, "weights"),
    ({"weights": "w.pth", "weights_sha256": "abc"}, "64 lowercase hex"),
    ({"weights_sha256": "0" * 64}, "set both or neither"),
])
def test_bad_backbone_fields_are_one_line_errors(options, needle):
    with pytest.raises(OddspotError, match=needle):
        PatchCoreConfig(**options)


def test_saved_model_holds_explicit_defaults_and_loads_without_the_newer_fields(tmp_path):
    images = [np.full((40, 40, 3), v, np.uint8) for v in (90, 120, 150)]
    model = PatchCore(image_size=32, batch_size=4, coreset_ratio=0.5, device="cpu").fit(images)
    model.save(tmp_path / "run")
    meta_path = tmp_path / "run" / "model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["config"]["layers"] == ["stage3", "stage5"] and meta["config"]["weights"] is None
    del meta["config"]["weights"], meta["config"]["weights_sha256"]  # as written before these fields existed
    meta_path.write_text(json.dumps(meta))
    again = load_model(tmp_path / "run", device="cpu")
    assert again.config.weights is None
    assert np.array_equal(again.predict(images, maps=False).scores, model.predict(images, maps=False).scores)


def test_a_shared_backbone_must_be_the_one_the_config_names():
    lite0 = build_backbone("efficientnet_lite0", device="cpu")
    with pytest.raises(OddspotError, match="shared backbone is efficientnet_lite0.*names efficientnet_lite1"):
        PatchCore(PatchCoreConfig(backbone="efficientnet_lite1"), backbone=lite0)
    assert PatchCore(PatchCoreConfig(image_size=32), backbone=lite0).backbone is lite0


# ResNets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPECS))
def test_resnet_has_torchvision_parameter_names_and_counts(name):
    shapes = reference_shapes(name)
    learned = [k for k in shapes if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert sum(math.prod(shapes[k]) for k in learned) == TORCHVISION_PARAMETERS[name]
    bottleneck = name != "resnet18"
    assert ("layer1.0.downsample.0.weight" in shapes) == bottleneck  # 64 -> 256 channels needs a projection
    assert shapes["fc.weight"] == (1000, 2048 if bottleneck else 512)
    assert shapes["layer2.0.conv2.weight"] == {"resnet18": (128, 128, 3, 3), "resnet50": (128, 128, 3, 3),
                                               "wide_resnet50_2": (256, 256, 3, 3)}[name]


def _reference_resnet18(state: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """ResNet-18 written out with functional ops from the torchvision definition (stride on conv1)."""
    def bn(h, p):
        return F.batch_norm(h, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], False, 0.0, 1e-5)

    h = F.relu(bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    h = F.max_pool2d(h, 3, 2, 1)
    out = {}
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            stride = 2 if layer > 1 and block == 0 else 1
            skip = h
            if f"{p}.downsample.0.weight" in state:
                skip = bn(F.conv2d(h, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            y = F.relu(bn(F.conv2d(h, state[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
            h = F.relu(bn(F.conv2d(y, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2") + skip)
        out[f"layer{layer}"] = h
    return out


def test_resnet18_features_match_the_functional_definition(tmp_path):
    state = random_state("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    backbone = build_backbone("resnet18", device="cpu", weights=str(path), layers=("layer2", "layer3"))
    assert backbone.scaling == "imagenet" and not hasattr(backbone.model, "layer4")  # built only as deep as needed
    x = backbone.preprocess(data.coffee(), 64)
    ex = FeatureExtractor(backbone, ["layer2", "layer3"])
    got = ex(x)
    ex.close()
    ref = _reference_resnet18(state, x.contiguous())
    for layer in ("layer2", "layer3"):
        torch.testing.assert_close(got[layer], ref[layer], rtol=1e-4, atol=1e-4)
    assert got["layer3"].shape[1:] == (256, 4, 4)


def test_dilated_resnet50_keeps_output_stride_16():
    model = resnet("resnet50", 4, dilate_last=True)
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 2048, 4, 4)
    assert model.layer4[0].conv2.dilation == (1, 1) and model.layer4[1].conv2.dilation == (2, 2)


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.pop("layer2.1.conv2.weight"), "'layer2.1.conv2.weight' missing"),
    (lambda s: s.update({"layer2.0.conv1.weight": torch.zeros(128, 64, 1, 1)}), "'layer2.0.conv1.weight' has shape"),
    (lambda s: s.update({"head.weight": torch.zeros(3)}), "'head.weight' is not a resnet18 tensor"),
    (lambda s: s.update({"layer4.0.conv1.weight": torch.zeros(3)}), "'layer4.0.conv1.weight' has shape"),
])
def test_mismatched_resnet_file_names_the_file_and_first_bad_tensor(tmp_path, edit, needle):
    state = random_state("resnet18", upto=3)
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(OddspotError, match=needle) as info:
        build_backbone("resnet18", device="cpu", weights=str(path), layers=("layer2", "layer3"))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_resnet_without_weights_says_which_option_to_pass():
    with pytest.raises(OddspotError, match="--weights"):
        build_backbone("resnet50", device="cpu")


def test_safetensors_weights_and_deeper_tensors_are_accepted(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "r18.safetensors"
    save_file(random_state("resnet18", upto=4), str(path))  # layer4 and fc present, unused
    backbone = build_backbone("resnet18", device="cpu", weights=str(path), layers=("layer1",))
    assert backbone.aliases == {"layer1": "layer1"}
    with pytest.raises(OddspotError, match="not found in backbone"):
        backbone.module_name("layer2")


# weights files and URLs --------------------------------------------------------------------------
def test_url_downloads_once_into_the_cache_with_its_sha256(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("ODDSPOT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "r18.pth"
    torch.save(random_state("resnet18", upto=3), src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    url = src.as_uri()
    path, got = resolve_weights(url)
    assert got == sha and path == cached_path(url) and path.parent == tmp_path / "cache" / "weights"
    assert path.read_bytes() == src.read_bytes() and not list(path.parent.glob(".*.tmp"))
    src.unlink()  # offline now: the cached copy is used, and checked
    assert resolve_weights(url, sha) == (path, sha)
    with pytest.raises(OddspotError, match="weights changed"):
        resolve_weights(url, "0" * 64)
    named = tmp_path / "resnet18-deadbeef.pth"  # torchvision names promise a sha256 prefix
    named.write_bytes(b"not the promised file")
    with pytest.raises(OddspotError, match="promises deadbeef"):
        resolve_weights(named.as_uri())
    assert not cached_path(named.as_uri()).exists()
    with pytest.raises(OddspotError, match="cannot download"):
        resolve_weights((tmp_path / "absent.pth").as_uri())


def test_run_records_the_weights_sha256_and_refuses_changed_or_missing_weights(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(random_state("resnet18", upto=3), path)
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    model = PatchCore(backbone="resnet18", weights=str(path), image_size=32, batch_size=4, coreset_ratio=0.5,
                      device="cpu").fit(images)
    assert model.config.layers == ("layer2", "layer3") and len(model.config.weights_sha256) == 64
    model.save(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "model.json").read_text())["config"]
    assert saved["weights"] == str(path) and saved["weights_sha256"] == model.config.weights_sha256
    again = load_model(tmp_path / "run", device="cpu")
    assert np.array_equal(again.predict(images, maps=False).scores, model.predict(images, maps=False).scores)
    torch.save(random_state("resnet18", upto=3, seed=1), path)
    with pytest.raises(OddspotError, match="weights changed"):
        load_model(tmp_path / "run", device="cpu")
    path.unlink()
    with pytest.raises(OddspotError, match="weights file not found"):
        load_model(tmp_path / "run", device="cpu")


# command line ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def few_tiles(tmp_path_factory) -> Path:
    """5 train, 2 good + 3 defective test tiles of 32 px: the smallest dataset a calibrated fit runs on."""
    from oddspot.data.demo_dataset import build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("few"), ("brick",), n_train=5, n_test_good=2, n_test_bad=3,
                              tile=32, seed=1)


def test_cli_fit_with_lite2_offline(few_tiles, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"backbone": "efficientnet_lite0", "coreset_ratio": 0.25, "batch_size": 4,
                                      "image_size": 64}))  # --backbone overrides the config's
    res = run_cli("inspect", "fit", few_tiles, "-c", "brick", "-o", tmp_path / "run", "--config", config,
                  "--backbone", "efficientnet_lite2")
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "run" / "model.json").read_text())["config"]
    assert (saved["backbone"], saved["layers"], saved["weights"]) == ("efficientnet_lite2", ["stage3", "stage5"], None)
    assert load_model(tmp_path / "run", device="cpu").backbone.model._blocks[6]._project_conv.out_channels == 48


def test_cli_fit_wide_resnet_with_a_weights_file_and_a_mismatched_one(few_tiles, tmp_path):
    weights = tmp_path / "wrn.pth"
    torch.save(random_state("wide_resnet50_2", upto=3), weights)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"coreset_ratio": 0.25, "batch_size": 4, "image_size": 32}))
    base = ["inspect", "fit", few_tiles, "-c", "brick", "--config", config, "--backbone", "wide_resnet50_2"]
    res = run_cli(*base, "-o", tmp_path / "run", "--weights", weights)
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "run" / "model.json").read_text())["config"]
    assert (saved["backbone"], saved["layers"], saved["weights"]) == ("wide_resnet50_2", ["layer2", "layer3"], str(weights))
    small = tmp_path / "r18.pth"
    torch.save(random_state("resnet18", upto=3), small)
    for args, needle in (([], "--weights"), (["--weights", small], "has shape")):
        res = run_cli(*base, "-o", tmp_path / "bad", *args)
        assert res.exit_code == 2, res.output
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert str(small) in res.stderr and "conv1.weight" in res.stderr
    assert not Path(tmp_path / "bad").exists()


# export ------------------------------------------------------------------------------------------
def test_exported_resnet18_patchcore_scores_like_torch_and_holds_no_deeper_layer(tmp_path):
    import onnx

    from oddspot.export.folder import export_run

    path = tmp_path / "r18.pth"
    torch.save(random_state("resnet18", upto=4), path)
    backbone = build_backbone("resnet18", device="cpu", weights=str(path))  # all four layers built
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 56, 3), dtype=np.uint8) for _ in range(4)]
    model = PatchCore(PatchCoreConfig(backbone="resnet18", weights=str(path), image_size=64, batch_size=2,
                                      coreset_ratio=0.5), backbone=backbone).fit(images)
    model.save(tmp_path / "run")
    export_run(tmp_path / "run", "onnx", "fp32", tmp_path / "onnx")
    exported = load_model(tmp_path / "onnx")
    assert exported.runtime == "onnxruntime fp32"
    ref, got = model.predict(images), exported.predict(images)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=0)
    for m, r in zip(got.maps, ref.maps):
        assert float(np.abs(m - r).max()) <= 1e-3 * float(np.abs(r).max())
    weights = sum(int(np.prod(t.dims)) for t in onnx.load(str(tmp_path / "onnx" / "trunk.onnx")).graph.initializer)
    used = sum(p.numel() for n, p in backbone.model.named_parameters() if not n.startswith("layer4"))
    deeper = sum(p.numel() for n, p in backbone.model.named_parameters() if n.startswith("layer4"))
    assert deeper > 2 * used and weights <= used  # control: layer4 outweighs the rest; BN folds into the convolutions


# road: DeepLabV3+ on ResNet-50 -------------------------------------------------------------------
def test_road_resnet50_config_defaults_and_errors(tmp_path):
    from oddspot.road.model import DeepLabV3Plus

    lite = ModelConfig()
    assert (lite.backbone, lite.low_level, lite.high_level, lite.aux_layer) == ("efficientnet_lite0", "stage2", "stage5", "stage4")
    res = ModelConfig(backbone="resnet50")
    assert (res.low_level, res.high_level, res.aux_layer, res.weights) == ("layer1", "layer4", "layer3", None)
    with pytest.raises(OddspotError, match="layer 'stage2' unknown for backbone resnet50"):
        ModelConfig(backbone="resnet50", low_level="stage2")
    with pytest.raises(OddspotError, match="weights file not found"):
        ModelConfig(backbone="resnet50", weights=str(tmp_path / "absent.pth"))
    with pytest.raises(OddspotError, match="needs ImageNet weights; set the model option weights"):
        DeepLabV3Plus(res, pretrained=True)


@pytest.mark.slow
def test_road_deeplabv3plus_on_resnet50_starts_from_the_weights_saves_and_exports(tmp_path):
    from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
    from oddspot.export.folder import export_run
    from oddspot.road.estimator import RoadModel
    from oddspot.road.model import DeepLabV3Plus, preprocess

    weights = tmp_path / "r50.pth"
    state = random_state("resnet50")
    torch.save(state, weights)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 48, 96, 3), dtype=np.uint8))
    full = ModelConfig(backbone="resnet50", weights=str(weights))
    with torch.inference_mode():  # the default taps, layer4 dilated, against the trunk fed ImageNet-normalized pixels
        got = DeepLabV3Plus(full, pretrained=True).eval().encoder(preprocess(pixels), ("low", "high"))
        ref = resnet("resnet50", 4, state, dilate_last=True)
        x = scale_pixels(pixels.permute(0, 3, 1, 2).float(), "imagenet").contiguous()
        low = ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))
        high = ref.layer4(ref.layer3(ref.layer2(low)))
    torch.testing.assert_close(got["low"], low, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["high"], high, rtol=1e-4, atol=1e-4)
    assert low.shape[-2:] == (12, 24) and high.shape[-2:] == (3, 6)  # strides 4 and 16

    # a small network (taps up to layer3) through scores, save, load and export
    torch.save(random_state("resnet50", upto=3), weights)
    toy = tmp_path / "toy"
    generate_toy_streets(toy, ToyStreetConfig(height=48, width=96, n_train=3, n_val=2, n_test=2, seed=2))
    model = RoadModel(device="cpu", model={"backbone": "resnet50", "weights": str(weights), "high_level": "layer3",
                                           "aux_layer": "layer2", "aspp_channels": 16, "aspp_rates": [1, 2],
                                           "low_level_channels": 8, "decoder_channels": 16, "aux_channels": 8},
                      scores={"val_pixels_per_image": 300, "pixels_per_class": 16, "seed": 5})
    assert model.config.model.weights_sha256 != full.weights_sha256  # the file's digest, recorded
    torch.manual_seed(0)
    net = DeepLabV3Plus(model.config.model, pretrained=True)
    net.freeze("stage2")  # the training option names Lite stages: stage2 = the stem and layer1
    assert not any(p.requires_grad for p in net.encoder.trunk.layer1.parameters())
    assert all(p.requires_grad for p in net.encoder.trunk.layer2.parameters())
    model.network = net.eval()
    model.fit_scores(toy, log=lambda s: None)
    model.save(tmp_path / "run")
    images = [np.random.default_rng(i).integers(0, 255, (48, 96, 3), dtype=np.uint8) for i in range(2)]
    weights.unlink()  # a trained road network holds all its weights: the ImageNet file is not needed any more
    expected = model.predict(images)
    np.testing.assert_array_equal(load_model(tmp_path / "run", device="cpu").predict(images).scores, expected.scores)
    export_run(tmp_path / "run", "onnx", "fp32", tmp_path / "onnx")
    np.testing.assert_allclose(load_model(tmp_path / "onnx").predict(images).scores, expected.scores, rtol=1e-4, atol=1e-6)
