import pytest

from cxrlib.config import StudyConfig, _default_tasks, config_from_dict, load_config
from cxrlib.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_original_tasks():
    cfg = load_config(None)
    assert cfg.task_classes("multiclass") == ["normal", "viral_pneumonia", "covid19"]
    assert cfg.tasks["binary"] == {"other": ["normal", "viral_pneumonia"], "covid19": ["covid19"]}
    assert isinstance(cfg, StudyConfig)


def test_yaml_and_overrides_are_typed(tmp_path):
    p = write(tmp_path, "train:\n  lr: 0.001\n  epochs: 3\nmodel:\n  arch: resnet18\n")
    cfg = load_config(p, ["train.batch_size=4", "data.max_per_class=10", "evaluate.external=null"])
    assert cfg.train.lr == 0.001 and cfg.train.epochs == 3 and cfg.train.batch_size == 4
    assert cfg.model.arch == "resnet18" and cfg.data.max_per_class == 10 and cfg.evaluate.external is None
    assert cfg.train.momentum == 0.9  # untouched default


def test_int_accepted_where_float_expected(tmp_path):
    assert load_config(write(tmp_path, "train:\n  lr: 1\n")).train.lr == 1.0


@pytest.mark.parametrize(
    "text, key",
    [
        ("train:\n  lrr: 0.1\n", "train.lrr"),
        ("bogus: 1\n", "bogus"),
        ("train:\n  epochs: three\n", "train.epochs"),
        ("train:\n  optimizer: rmsprop\n", "train.optimizer"),
        ("train:\n  hflip: 1\n", "train.hflip"),
        ("train:\n  lr: -1\n", "train.lr"),
        ("split:\n  n_folds: 2\n", "split.n_folds"),
        ("tasks:\n  t:\n    a: [normal]\n    b: [flu]\n", "tasks.t.b"),
        ("tasks:\n  t:\n    a: [normal]\n", "tasks.t"),
        ("train:\n  image_size: 300\n", "train.image_size"),
        ("data: 5\n", "data"),
        ("derived_tasks:\n  nope: multiclass\n", "derived_tasks.nope"),
        ("derived_tasks:\n  binary: binary\n", "derived_tasks.binary"),
        ("derived_tasks:\n  binary: multiclass\n  multiclass: binary\n", "derived_tasks.binary"),
    ],
)
def test_bad_values_name_the_key_and_file(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert key in str(err.value) and str(p) in str(err.value)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(None, ["train.nope=1"])
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [\n"))


def test_unknown_task_names_known_ones():
    with pytest.raises(ConfigError, match="multiclass"):
        load_config(None).task_classes("nope")


def test_every_shipped_params_file_validates():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "params").glob("*.yaml"))
    assert files, "params/*.yaml missing"
    for f in files:
        load_config(f)


def test_exponent_floats_empty_sections_and_seeds(tmp_path):
    p = write(tmp_path, "train:\n  lr: 1e-4\nevaluate:\n")
    cfg = load_config(p, ["train.weight_decay=5e-5", "evaluate.bootstrap=10"])
    assert cfg.train.lr == 1e-4 and cfg.train.weight_decay == 5e-5 and cfg.evaluate.bootstrap == 10
    with pytest.raises(ConfigError, match=r"train.seed.*--set train.seed=-1|--set train.seed=-1.*train.seed"):
        load_config(p, ["train.seed=-1"])


def test_derived_tasks_need_the_sources_classes_inside_theirs():
    cfg = load_config(None, ["derived_tasks={binary: multiclass}"])
    assert cfg.source_task("binary") == "multiclass" and cfg.source_task("multiclass") is None
    assert cfg.class_map("binary") == [0, 0, 1]  # normal, viral pneumonia -> other; covid19 -> covid19
    split = {"multiclass": {"normal": ["normal", "covid19"], "viral_pneumonia": ["viral_pneumonia"]},
             "binary": {"other": ["normal", "viral_pneumonia"], "covid19": ["covid19"]}}
    with pytest.raises(ConfigError, match=r"tasks.multiclass.normal .* is split across binary's classes"):
        config_from_dict({"tasks": split, "derived_tasks": {"binary": "multiclass"}})
    wider = {"multiclass": _default_tasks()["multiclass"],
             "binary": {"other": ["normal", "viral_pneumonia", "bacterial_pneumonia"], "covid19": ["covid19"]}}
    with pytest.raises(ConfigError, match="label 'bacterial_pneumonia' of task binary is not in task multiclass"):
        config_from_dict({"tasks": wider, "derived_tasks": {"binary": "multiclass"}})
    narrower = {"multiclass": {**_default_tasks()["multiclass"], "bacterial": ["bacterial_pneumonia"]},
                "binary": _default_tasks()["binary"]}
    with pytest.raises(ConfigError, match="label 'bacterial_pneumonia' of tasks.multiclass.bacterial is in no class"):
        config_from_dict({"tasks": narrower, "derived_tasks": {"binary": "multiclass"}})
