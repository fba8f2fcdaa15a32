"""Configuration: the shipped configs validate; each kind of bad value is refused with the key named."""

from __future__ import annotations

import copy

import pytest

from kaepipe.config import base_seeds, config_subset, dataset_config, draw_of, lambda_tag, load_yaml, merged
from kaepipe.errors import ConfigError
from kaepipe.settings import validate_config


@pytest.fixture(scope="module")
def default(repo):
    return load_yaml(repo / "config.yaml")


@pytest.mark.parametrize("name", ["config.yaml", "config/paper.yaml", "tests/config/tiny.yaml"])
def test_shipped_configs_are_valid(repo, schema_path, name):
    cfg = load_yaml(repo / name)
    if name.startswith("tests"):
        cfg = merged(load_yaml(repo / "config.yaml"), cfg)
    validate_config(cfg, schema_path)


@pytest.mark.parametrize("base", ["config.yaml", "config/paper.yaml"])
def test_wide_kae_overlay_changes_only_the_yinyang_kae_sizes_and_lr(repo, schema_path, base):
    full = load_yaml(repo / base)
    cfg = merged(full, load_yaml(repo / "config/yinyang_wide_kae.yaml"))
    validate_config(cfg, schema_path)
    kae = dataset_config(cfg, "yinyang")["kae"]
    assert (kae["hidden"], kae["latent"], kae["lr"]) == (64, 40, 0.03)
    changed = {"hidden", "latent", "lr"}
    assert {k: v for k, v in kae.items() if k not in changed} == {
        k: v for k, v in full["datasets"]["yinyang"]["kae"].items() if k not in changed}
    assert {k: v for k, v in cfg.items() if k != "datasets"} == {k: v for k, v in full.items() if k != "datasets"}
    assert cfg["datasets"]["mnist"] == full["datasets"]["mnist"]


@pytest.mark.parametrize("base", ["config.yaml", "config/paper.yaml"])
def test_draws_overlay_sets_five_base_draws_and_nothing_else(repo, schema_path, base):
    full = load_yaml(repo / base)
    cfg = merged(full, load_yaml(repo / "config/draws.yaml"))
    validate_config(cfg, schema_path)
    for name in full["run"]:
        assert base_seeds(dataset_config(cfg, name)) == [0, 1, 2, 3, 4]
        assert base_seeds(dataset_config(cfg, name))[0] == base_seeds(dataset_config(full, name))[0]  # draw 0 kept
        drop = {k: v for k, v in cfg["datasets"][name]["base"].items() if k != "seeds"}
        assert drop == {k: v for k, v in full["datasets"][name]["base"].items() if k != "seeds"}
        assert {k: v for k, v in cfg["datasets"][name].items() if k != "base"} == {
            k: v for k, v in full["datasets"][name].items() if k != "base"}
    assert {k: v for k, v in cfg.items() if k != "datasets"} == {k: v for k, v in full.items() if k != "datasets"}


def set_key(cfg: dict, path: str, value):
    node = cfg
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


BAD = [
    ("unknown top-level key", "colour", "blue", r"'colour' was unexpected"),
    ("unknown nested key", "datasets.yinyang.base.widht", 10, r"datasets\.yinyang\.base.*'widht' was unexpected"),
    ("wrong type", "datasets.yinyang.base.epochs", "many", r"datasets\.yinyang\.base\.epochs': 'many' is not of type"),
    ("zero epochs", "datasets.mnist.base.epochs", 0, r"datasets\.mnist\.base\.epochs': 0 is less than the minimum of 1"),
    ("negative size", "datasets.yinyang.splits.train.size", -5, r"datasets\.yinyang\.splits\.train\.size'"),
    ("batch of one", "datasets.yinyang.base.batch_size", 1, r"datasets\.yinyang\.base\.batch_size'"),
    ("bad device", "device", "tpu", r"'device': 'tpu' is not one of the allowed values"),
    ("unknown source", "datasets.mnist.source", "cifar", r"datasets\.mnist\.source': 'cifar' is not one of"),
    ("unknown dataset in run", "run", ["yinyang", "imagenet"], r"'run': unknown dataset 'imagenet'"),
    ("empty run list", "run", [], r"'run'"),
    ("wrong class count", "datasets.yinyang.classes", 4, r"datasets\.yinyang\.classes': yinyang has 3 classes, got 4"),
    ("missing required key", "datasets.yinyang.base.width", KeyError, r"'width' is a required property"),
    ("non-positive lr", "datasets.yinyang.base.lr", 0, r"datasets\.yinyang\.base\.lr'"),
    ("empty seed list", "datasets.yinyang.kae.seeds", [], r"datasets\.yinyang\.kae\.seeds'"),
    ("negative lambda_iso", "datasets.yinyang.kae.lambda_iso", [1, -0.1], r"datasets\.yinyang\.kae\.lambda_iso\.1': -0\.1 is less than the minimum of 0"),
    ("main lambda not in grid", "datasets.yinyang.kae.main_lambda_iso", 0.5, r"main_lambda_iso': 0\.5 is not in the grid"),
    ("non-positive k", "datasets.yinyang.kae.k", 0, r"datasets\.yinyang\.kae\.k'"),
    ("unknown parametrization", "datasets.yinyang.kae.parametrization", "cayley", r"parametrization': 'cayley' is not one of"),
    ("bad protocol split", "datasets.yinyang.evaluation.heldout", "train", r"evaluation\.heldout"),
    ("base seed and seeds", "datasets.yinyang.base.seed", 3, r"datasets\.yinyang\.base\.seeds': give either .*not both"),
    ("repeated base draw", "datasets.yinyang.base.seeds", [0, 1, 0], r"datasets\.yinyang\.base\.seeds': .*non-unique"),
    ("negative base draw", "datasets.mnist.base.seeds", [0, -1], r"datasets\.mnist\.base\.seeds\.1': -1 is less than"),
    ("no base draw", "datasets.yinyang.base.seeds", [], r"datasets\.yinyang\.base\.seeds'"),
    ("base draw not an integer", "datasets.yinyang.base.seeds", [0.5], r"datasets\.yinyang\.base\.seeds\.0'"),
]


@pytest.mark.parametrize("what,key,value,message", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_refused_naming_the_key(default, schema_path, what, key, value, message):
    cfg = set_key(copy.deepcopy(default), key, value)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, schema_path)


def test_dataset_config_resolves_mnist_root(default):
    cfg = copy.deepcopy(default)
    cfg["mnist_root"] = "/data/mnist"
    assert dataset_config(cfg, "mnist")["root"] == "/data/mnist"
    assert dataset_config(cfg, "fashion_mnist")["root"] == "/usr/share/datasets/fashion-mnist"
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        dataset_config(cfg, "cifar")


def test_lambda_tags():
    assert [lambda_tag(x) for x in (1, 0.1, 0.01, 0.001, 0.0001, 0)] == ["1", "0.1", "0.01", "0.001", "0.0001", "0"]


def test_config_subset_keeps_identity_and_named_blocks_and_drops_sub_blocks(default):
    ds = dataset_config(default, "yinyang")
    sub = config_subset(ds, ("base", "unlearn"), drop=("unlearn.baselines", "base.no_such_key"))
    assert set(sub) == {"name", "source", "classes", "evaluation", "base", "unlearn"}
    assert "baselines" not in sub["unlearn"] and sub["unlearn"]["reg"] == ds["unlearn"]["reg"]
    assert sub["base"] == ds["base"]
    assert "baselines" in ds["unlearn"]  # the dataset's settings are not modified
    with pytest.raises(ConfigError, match="block.key"):
        config_subset(ds, ("base",), drop=("unlearn",))


def test_stage_defaults_live_in_the_schema_and_validation_fills_them(default, schema_path):
    """The topology and unlearn defaults are the schema's `default` values: Snakemake's validation fills a
    partial block with exactly what kaepipe.settings merges over it."""
    from snakemake.utils import validate

    from kaepipe.settings import topology_settings, unlearn_settings

    cfg = copy.deepcopy(default)
    yy = cfg["datasets"]["yinyang"]
    yy["topology"] = {"eps_layers": 0.3, "eps_iterates": 0.3, "isometry": {"points": 500}}
    yy["unlearn"] = {"target_classes": [1], "region": {"reg": 0.5}}
    validate(cfg, str(schema_path), set_default=True)
    filled_topology, filled_unlearn = yy["topology"], yy["unlearn"]
    assert filled_topology["metric"] == "euclidean" and filled_topology["isometry"]["max_edges"] == 100000
    assert filled_unlearn["reg"] == 0.1 and filled_unlearn["region"] == {"targets": "centroid", "reg": 0.5, "strength": 1.0}
    merged_topology = topology_settings({**yy, "name": "yinyang", "topology": yy["topology"]})
    for key, value in filled_topology.items():
        assert merged_topology[key] == value, key
    merged_unlearn = unlearn_settings({"unlearn": {"target_classes": [1], "region": {"reg": 0.5}}, "base": yy["base"]})
    for key in ("methods", "targets", "reg", "region", "timing_repeats", "study"):
        assert merged_unlearn[key] == filled_unlearn[key], key


def test_base_seeds_and_their_shorthand(default, schema_path):
    """base.seeds lists the draws; base.seed: N is shorthand for seeds: [N]; neither: the single draw 0."""
    assert base_seeds(dataset_config(default, "yinyang")) == [0]
    short = copy.deepcopy(default)
    del short["datasets"]["yinyang"]["base"]["seeds"]
    assert base_seeds(dataset_config(short, "yinyang")) == [0]  # neither given
    short["datasets"]["yinyang"]["base"]["seed"] = 4
    validate_config(short, schema_path)
    assert base_seeds(dataset_config(short, "yinyang")) == [4]
    five = merged(default, {"datasets": {"yinyang": {"base": {"seeds": [3, 1, 4, 0, 2]}}}})
    validate_config(five, schema_path)
    assert base_seeds(dataset_config(five, "yinyang")) == [3, 1, 4, 0, 2]  # config order


@pytest.mark.parametrize("base, message", [
    ({"seed": 1, "seeds": [1]}, r"base\.seeds': give either .*not both"),
    ({"seeds": [2, 2]}, r"base\.seeds': \[2\] listed more than once"),
    ({"seeds": [0, -3]}, r"base\.seeds': \[-3\] are not non-negative integers"),
    ({"seeds": [True]}, r"base\.seeds': \[True\] are not non-negative integers"),
    ({"seeds": []}, r"base\.seeds': \[\] is not a non-empty list"),
    ({"seed": -1}, r"base\.seed': -1 is not a non-negative integer"),
    ({"seeds": [0, 1], "weights": "w.safetensors"}, r"base\.seeds': \[0, 1\] asks for 2 draws, but .*weights is one"),
])
def test_bad_base_seeds_are_refused_without_the_schema(base, message):
    """The one reader of the draws refuses what the schema refuses (a config checked by kaepipe alone)."""
    with pytest.raises(ConfigError, match=message):
        base_seeds({"name": "yy", "base": base})


def test_the_settings_of_one_draw(default):
    """A draw's settings: `draw` and base.seed are the draw, base.seeds is gone, and they (a rule's params) do not
    change when other draws are added, so adding draws reruns nothing of the existing ones."""
    five = merged(default, {"datasets": {"yinyang": {"base": {"seeds": [0, 1, 2, 3, 4]}}}})
    ds = dataset_config(five, "yinyang", "2")
    assert ds["draw"] == 2 and ds["base"]["seed"] == 2 and "seeds" not in ds["base"] and draw_of(ds) == 2
    assert draw_of(dataset_config(five, "yinyang")) is None and draw_of(dataset_config(default, "yinyang")) == 0
    one, many = (config_subset(dataset_config(c, "yinyang", 0), ("base", "kae")) for c in (default, five))
    assert one == many and one["draw"] == 0
    assert config_subset(dataset_config(five, "yinyang", 1), ("base",)) != many
    with pytest.raises(ConfigError, match=r"no draw 7 among \[0\]"):
        dataset_config(default, "yinyang", 7)
