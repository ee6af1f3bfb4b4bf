"""The model family against the published code: outputs and post-processing on the golden fixtures, key names and
shapes of the four full-size published models, and backbone behaviour."""
import importlib.util
import json
import shutil

import pytest
import timm
import torch
from torch.testing import assert_close
from transformers import RobertaConfig

from helpers.paths import MDETR_GOLDEN, require
from mdetr_phrasecut.model.backbone import Backbone
from mdetr_phrasecut.model.build import build_model
from mdetr_phrasecut.model.postprocess import PostProcess, PostProcessPhrasecut, PostProcessSegm
from mdetr_phrasecut.model.nested_tensor import nested_tensor_from_tensor_list
from helpers.specs import model_config

PARTS = ["detector", "segm"]
FULL_SIZE = ["resnet101/detector", "resnet101/segm", "efficientnet_b3/detector", "efficientnet_b3/segm"]
TOL = dict(atol=1e-4, rtol=1e-4)


def load_fill(reference_dir):
    spec = importlib.util.spec_from_file_location("reference_fill", reference_dir / "fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_state_dict


@pytest.fixture(scope="module", params=MDETR_GOLDEN, ids=lambda p: p.name)
def golden(request, reference_dir):
    data = torch.load(require(request.param), weights_only=True)
    data["path"] = request.param
    data["fill_state_dict"] = load_fill(reference_dir)
    data["runs"] = {}
    return data


def golden_cfg(data, part):
    outputs = data[part]["outputs"]
    return {**data["config"],
            "text_encoder_type": str(data["path"].parent / data["config"]["text_encoder_type"]),
            "masks": "pred_masks" in outputs,
            "contrastive_align_loss": "proj_queries" in outputs,
            "aux_loss": "aux_outputs" in outputs}


def run(data, part):
    """(model, outputs) of our model with the fixture's weights on the fixture's batch, cached per fixture."""
    if part not in data["runs"]:
        model = build_model(model_config(**golden_cfg(data, part)))
        model.load_state_dict(data["fill_state_dict"](data[part]["state_dict_shapes"], data["seed"]), strict=True)
        model.eval()
        with torch.no_grad():
            outputs = model(nested_tensor_from_tensor_list(data["images"]), data["captions"])
        data["runs"][part] = model, outputs
    return data["runs"][part]


def sizes(data):
    return (torch.stack([t["orig_size"] for t in data["targets"]]),
            torch.stack([t["size"] for t in data["targets"]]))


def postprocess(data, part, outputs, threshold=0.7):
    orig_size, size = sizes(data)
    results = PostProcess()(outputs, orig_size)
    if "pred_masks" in outputs:
        results = PostProcessSegm()(results, outputs, orig_size, size)
    return results, PostProcessPhrasecut(threshold)(results)


def assert_results(ours, expected, max_mask_mismatch=0.0):
    assert len(ours) == len(expected)
    for got, want in zip(ours, expected):
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            if value.dtype == torch.bool:
                assert got[key].shape == value.shape
                assert (got[key] != value).float().mean().item() <= max_mask_mismatch, key
            else:
                assert_close(got[key], value, **TOL)


@pytest.mark.parametrize("part", PARTS)
def test_golden_state_dict_keys_and_shapes(golden, part):
    model, _ = run(golden, part)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: list(s) for k, s in golden[part]["state_dict_shapes"].items()}


@pytest.mark.parametrize("part", PARTS)
def test_golden_outputs(golden, part):
    _, outputs = run(golden, part)
    expected = golden[part]["outputs"]
    assert set(outputs) == set(expected) | {"tokenized"}
    for key, value in expected.items():
        if key == "aux_outputs":
            assert len(outputs[key]) == len(value)
            for got, want in zip(outputs[key], value):
                assert set(got) - {"tokenized"} == set(want)
                for name in want:
                    assert_close(got[name], want[name], **TOL)
        else:
            assert_close(outputs[key], value, **TOL)
    assert outputs["tokenized"]["input_ids"].shape[0] == len(golden["captions"])
    if "proj_tokens" in expected:
        assert outputs["tokenized"]["input_ids"].shape[1] == expected["proj_tokens"].shape[1]


@pytest.mark.parametrize("part", PARTS)
def test_golden_postprocess_of_published_outputs(golden, part):
    results, phrasecut = postprocess(golden, part, golden[part]["outputs"])
    assert_results(results, golden[part]["postprocessed"])
    assert_results(phrasecut, golden[part]["phrasecut"])


@pytest.mark.parametrize("part", PARTS)
def test_golden_postprocess_of_our_outputs(golden, part):
    # Mask logits agree to ~1e-6, so only pixels sitting on the 0.5 threshold may flip.
    _, outputs = run(golden, part)
    results, phrasecut = postprocess(golden, part, outputs)
    assert_results(results, golden[part]["postprocessed"], max_mask_mismatch=1e-4)
    assert_results(phrasecut, golden[part]["phrasecut"], max_mask_mismatch=1e-4)


def test_golden_phrasecut_threshold(golden):
    outputs = golden["segm"]["outputs"]
    results, _ = postprocess(golden, "segm", outputs)
    for threshold in (0.0, 0.99, 1.0):
        for result, answer in zip(results, PostProcessPhrasecut(threshold)(results)):
            keep = result["scores"] > threshold
            assert answer["boxes"].shape == (int(keep.sum()), 4)
            assert torch.equal(answer["masks"], result["masks"][keep].any(0)[0])
            assert answer["masks"].shape == tuple(result["masks"].shape[-2:])
    empty = PostProcessPhrasecut(1.0)(results)
    assert all(not a["masks"].any() and a["boxes"].shape == (0, 4) for a in empty)


@pytest.fixture(scope="module")
def roberta_base_folder(tmp_path_factory, tiny_roberta_dir):
    """roberta-base's architecture (config only, no weights) with the tiny tokenizer: no download needed."""
    folder = tmp_path_factory.mktemp("roberta_base_config")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copy(tiny_roberta_dir / name, folder / name)
    RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_keys_and_shapes_golden(name, reference_dir, roberta_base_folder):
    official = json.loads((reference_dir / "official_state_dict_shapes.json").read_text())[name]
    backbone, stage = name.split("/")
    with torch.device("meta"):
        model = build_model(model_config(backbone=backbone, text_encoder_type=str(roberta_base_folder),
                                         masks=stage == "segm", contrastive_align_loss=stage == "detector"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) ^ set(official["keys"])) == []
    assert ours == official["keys"]
    assert sum(p.numel() for p in model.parameters()) == official["num_params"]


def test_efficientnet_frozen_bn_computes_timm_eval_with_release_eps():
    torch.manual_seed(0)
    ours = Backbone("efficientnet_b3", train_backbone=True).body.eval()
    reference = timm.create_model("tf_efficientnet_b3.ns_jft_in1k", features_only=True, out_indices=(1, 2, 3, 4))
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-5  # the release's frozen BN adds 1e-5 whatever the network's own eps (1e-3 here)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    reference.eval()
    ours.load_state_dict(reference.state_dict())  # strict: same keys (num_batches_tracked is dropped)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got, want = ours(x), reference(x)
    assert [f.shape[1] for f in got] == [32, 48, 136, 384]
    assert [f.shape[-1] for f in got] == [24, 12, 6, 3]
    for g, w in zip(got, want):
        assert_close(g, w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("lr_backbone, trained", [(1e-5, {"layer2", "layer3", "layer4"}), (0.0, set())])
def test_resnet_trains_layer2_to_4_only(lr_backbone, trained):
    backbone = Backbone("resnet18", train_backbone=lr_backbone > 0)
    groups = {name.split(".")[1] for name, p in backbone.named_parameters() if p.requires_grad}
    assert groups == trained
    samples = nested_tensor_from_tensor_list([torch.randn(3, 64, 80), torch.randn(3, 48, 64)])
    features = backbone(samples)
    assert [f.tensors.shape[1] for f in features] == [64, 128, 256, 512]
    assert [f.tensors.shape[-2:] for f in features] == [(16, 20), (8, 10), (4, 5), (2, 3)]
    assert features[0].mask[1, :12, :16].logical_not().all() and features[0].mask[1, 12:].all()
