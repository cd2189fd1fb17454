"""GLUE from the local Hugging Face cache of `nyu-mll/glue` on a node without internet.

What a user's cluster node sees after someone ran `datasets.load_dataset("nyu-mll/glue", "rte")` on a
login node with internet, built here in a tmp folder with made-up rows in GLUE's columns:

- the hub cache (HF_HUB_CACHE): `datasets--nyu-mll--glue/{refs/main, blobs/, snapshots/<commit>/}` holding
  README.md (the repo's `dataset_info:` and `configs:` front matter) and `rte/validation-00000-of-00001.parquet`
  etc., which is where `load_dataset` downloads the repo's files to;
- the prepared cache (HF_DATASETS_CACHE): `nyu-mll___glue/<config>/0.0.0/<commit>/` with dataset_info.json and
  `glue-<split>.arrow`, which `load_dataset` writes from those files. It is made here by the same parquet
  builder, configured from the README as `load_dataset` configures it (repo_id nyu-mll/glue, dataset_name glue,
  hash the commit), reading the snapshot's files instead of their hf:// URLs.

Offline (HF_HUB_OFFLINE=1), datasets 5.x does not look at the hub snapshot: `dataset_module_factory` raises
OfflineModeIsEnabled before asking huggingface_hub for README.md and falls back to `CachedDatasetModuleFactory`,
which loads the prepared cache ("Using the latest cached version of the dataset ..."). So the prepared cache is
what `painters.glue.data.load_split` reads; the snapshot alone is not enough (see the last test).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import hashlib
import shutil
import time
from pathlib import Path

import datasets
import datasets.config
import datasets.load
import huggingface_hub
import huggingface_hub.constants
import numpy as np
import pytest
from datasets.info import DatasetInfosDict
from datasets.load import (
    BuilderConfigsParameters,
    DatasetModule,
    create_builder_configs_from_metadata_configs,
    get_dataset_builder_class,
)
from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
from datasets.utils.metadata import MetadataConfigs

from painters.glue.data import HUB_DATASET, load_split
from painters.glue.tasks import get_task

COMMIT = "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c"  # a commit id of the form the hub gives (40 hex digits)
SPLITS = ("train", "validation", "test")

RTE_FEATURES = datasets.Features({
    "sentence1": datasets.Value("string"),
    "sentence2": datasets.Value("string"),
    "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
    "idx": datasets.Value("int32"),
})
STSB_FEATURES = datasets.Features({
    "sentence1": datasets.Value("string"),
    "sentence2": datasets.Value("string"),
    "label": datasets.Value("float32"),
    "idx": datasets.Value("int32"),
})
CLASS_NAMES = {"cola": ("unacceptable", "acceptable"), "rte": ("entailment", "not_entailment"),
               "wnli": ("not_entailment", "entailment")}


def rte_rows(split: str) -> dict[str, list]:
    n = {"train": 6, "validation": 5, "test": 3}[split]
    return {
        "sentence1": [f"{split} premise {i}: the cat sat on mat number {i}." for i in range(n)],
        # a sentence that looks like a number stays a string
        "sentence2": ["7" if i == 1 else f"{split} hypothesis {i}." for i in range(n)],
        # GLUE's test labels are hidden (-1)
        "label": [-1] * n if split == "test" else [(i * 7 + 3) % 2 for i in range(n)],
        "idx": list(range(n)),
    }


def stsb_rows(split: str) -> dict[str, list]:
    n = {"train": 4, "validation": 4, "test": 2}[split]
    scores = [3.8, 0.0, 5.0, 2.4]
    return {
        "sentence1": [f"{split} a man plays guitar {i}." for i in range(n)],
        "sentence2": [f"{split} someone plays music {i}." for i in range(n)],
        "label": [-1.0] * n if split == "test" else scores[:n],
        "idx": list(range(n)),
    }


ROWS = {"rte": (rte_rows, RTE_FEATURES), "stsb": (stsb_rows, STSB_FEATURES)}


def readme(counts: dict[str, dict[str, int]]) -> str:
    """nyu-mll/glue's README.md front matter (abridged to cola, rte, stsb, wnli): `dataset_info` per config
    and `configs` with `data_files` per split, as on the hub."""
    lines = ["---", "language:", "- en", "license:", "- other",
             "pretty_name: GLUE (General Language Understanding Evaluation benchmark)",
             "config_names:", "- cola", "- rte", "- stsb", "- wnli", "dataset_info:"]
    for name in ("cola", "rte", "stsb", "wnli"):
        text = ("sentence",) if name == "cola" else ("sentence1", "sentence2")
        lines += [f"- config_name: {name}", "  features:"]
        for column in text:
            lines += [f"  - name: {column}", "    dtype: string"]
        if name == "stsb":
            lines += ["  - name: label", "    dtype: float32"]
        else:
            lines += ["  - name: label", "    dtype:", "      class_label:", "        names:"]
            lines += [f"          '{i}': {label}" for i, label in enumerate(CLASS_NAMES[name])]
        lines += ["  - name: idx", "    dtype: int32", "  splits:"]
        for split in SPLITS:
            lines += [f"  - name: {split}", "    num_bytes: 1000", f"    num_examples: {counts.get(name, {}).get(split, 100)}"]
        lines += ["  download_size: 3000", "  dataset_size: 3000"]
    lines.append("configs:")
    for name in ("cola", "rte", "stsb", "wnli"):
        lines += [f"- config_name: {name}", "  data_files:"]
        for split in SPLITS:
            lines += [f"  - split: {split}", f"    path: {name}/{split}-*"]
    lines += ["---", "", "# Dataset Card for GLUE", ""]
    return "\n".join(lines)


def add_to_snapshot(repo: Path, relative: str, content: bytes) -> Path:
    """A file of the hub cache as huggingface_hub leaves it: the content in blobs/, a symlink in the snapshot."""
    blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    link = repo / "snapshots" / COMMIT / relative
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def write_hub_snapshot(hub_cache: Path, tasks: tuple[str, ...], scratch: Path) -> Path:
    """`datasets--nyu-mll--glue` in the hub cache with the repo's file names for `tasks`; the snapshot folder."""
    repo = hub_cache / "datasets--nyu-mll--glue"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    counts = {}
    for task in tasks:
        make, features = ROWS[task]
        counts[task] = {}
        for split in SPLITS:
            rows = make(split)
            counts[task][split] = len(rows["idx"])
            parquet = scratch / f"{task}-{split}.parquet"
            datasets.Dataset.from_dict(rows, features=features).to_parquet(str(parquet))
            add_to_snapshot(repo, f"{task}/{split}-00000-of-00001.parquet", parquet.read_bytes())
    add_to_snapshot(repo, "README.md", readme(counts).encode())
    return repo / "snapshots" / COMMIT


def prepare_like_load_dataset(snapshot: Path, task: str, scratch: Path) -> Path:
    """What `load_dataset("nyu-mll/glue", task)` writes to HF_DATASETS_CACHE after downloading: the parquet
    builder configured from the README (as HubDatasetModuleFactory + load_dataset_builder do), prepared."""
    card = huggingface_hub.DatasetCard.load(snapshot / "README.md").data
    metadata_configs = MetadataConfigs.from_dataset_card_data(card)
    infos = DatasetInfosDict.from_dataset_card_data(card)
    module_path = _PACKAGED_DATASETS_MODULES["parquet"][0]
    builder_configs, default = create_builder_configs_from_metadata_configs(module_path, metadata_configs,
                                                                            base_path=str(snapshot))
    module = DatasetModule(module_path, COMMIT, {}, BuilderConfigsParameters(metadata_configs, builder_configs, default),
                           dataset_infos=infos)
    # repo_id=nyu-mll/glue would make the builder insist on hf://datasets/nyu-mll/glue@... data files (which need the
    # network to list), and it only adds the `nyu-mll___` prefix to the folder: so prepare in `scratch` and move there
    builder = get_dataset_builder_class(module, dataset_name="glue")(
        cache_dir=str(scratch), config_name=task, hash=COMMIT, info=infos[task], base_path=str(snapshot),
        dataset_name="glue")
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)
    assert prepared == scratch / "glue" / task / "0.0.0" / COMMIT
    target = Path(datasets.config.HF_DATASETS_CACHE) / "nyu-mll___glue" / task
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(prepared.parents[1], target)
    return target / "0.0.0" / COMMIT


@pytest.fixture
def glue_cache(hf_home, tmp_path):
    """The caches a login node leaves after load_dataset("nyu-mll/glue", "rte") and ("nyu-mll/glue", "stsb")."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    snapshot = write_hub_snapshot(hf_home / "hub", ("rte", "stsb"), scratch)
    prepared = {task: prepare_like_load_dataset(snapshot, task, scratch / "prepare") for task in ("rte", "stsb")}
    return snapshot, prepared


def test_cache_layout_is_what_load_dataset_leaves(glue_cache, hf_home):
    snapshot, prepared = glue_cache
    # huggingface_hub finds the repo's files in the hub cache (refs/main -> snapshot -> blob)
    found = huggingface_hub.try_to_load_from_cache(HUB_DATASET, "rte/validation-00000-of-00001.parquet",
                                                   repo_type="dataset")
    assert found == str(snapshot / "rte" / "validation-00000-of-00001.parquet")
    repos = {repo.repo_id: repo for repo in huggingface_hub.scan_cache_dir(hf_home / "hub").repos}
    assert {r.commit_hash for r in repos[HUB_DATASET].revisions} == {COMMIT}
    # datasets' prepared cache: nyu-mll___glue/<config>/0.0.0/<commit>/glue-<split>.arrow
    for task in ("rte", "stsb"):
        assert prepared[task] == hf_home / "datasets" / "nyu-mll___glue" / task / "0.0.0" / COMMIT
        assert {p.name for p in prepared[task].iterdir()} >= {"dataset_info.json", *(f"glue-{s}.arrow" for s in SPLITS)}


def test_load_split_reads_the_cache_offline(glue_cache, monkeypatch):
    used = []  # which of datasets' module factories answered
    for factory in (datasets.load.CachedDatasetModuleFactory, datasets.load.HubDatasetModuleFactory):
        def spy(self, _get_module=factory.get_module, _name=factory.__name__):
            module = _get_module(self)
            used.append(_name)
            return module
        monkeypatch.setattr(factory, "get_module", spy)
    start = time.monotonic()
    rte = load_split(get_task("rte"), "validation")
    expected = rte_rows("validation")
    assert rte == [{"sentence1": s1, "sentence2": s2, "label": label}
                   for s1, s2, label in zip(expected["sentence1"], expected["sentence2"], expected["label"])]
    assert all(type(row["label"]) is int and isinstance(row["sentence2"], str) for row in rte)
    assert rte[1]["sentence2"] == "7"
    assert [row["label"] for row in load_split(get_task("rte"), "train")] == rte_rows("train")["label"]

    stsb = load_split(get_task("stsb"), "validation")
    assert [row["sentence1"] for row in stsb] == stsb_rows("validation")["sentence1"]
    assert all(type(row["label"]) is float for row in stsb)
    # STS-B's labels are float32 in nyu-mll/glue: they come back as the float32 value widened (3.8 -> 3.7999999523...)
    assert [row["label"] for row in stsb] == [float(np.float32(x)) for x in stsb_rows("validation")["label"]]
    assert stsb[0]["label"] == pytest.approx(3.8)
    assert time.monotonic() - start < 10
    # it came from the prepared cache ("Using the latest cached version of the dataset ..."), offline
    assert used == ["CachedDatasetModuleFactory"] * 3


@pytest.mark.parametrize("task", ["cola", "wnli"])
def test_task_missing_from_cache_is_a_clear_error(glue_cache, task):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as raised:
        load_split(get_task(task), "validation")
    assert time.monotonic() - start < 5
    message = str(raised.value)
    assert HUB_DATASET in message and f"GLUE task {task}" in message
    assert f"load_dataset('{HUB_DATASET}', '{task}')" in message  # download it where there is internet
    assert "glue.data_dir" in message  # or give local files
    assert datasets.config.HF_HUB_OFFLINE and huggingface_hub.constants.HF_HUB_OFFLINE
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_empty_cache_is_a_clear_error(hf_home):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"nyu-mll/glue.*glue\.data_dir"):
        load_split(get_task("rte"), "validation")
    assert time.monotonic() - start < 5


def test_hub_snapshot_alone(hf_home, tmp_path):
    """Only the hub snapshot (e.g. `hf download nyu-mll/glue --repo-type dataset`), nothing prepared: datasets 5.x
    offline does not read it (OfflineModeIsEnabled comes before its README lookup), so load_split can only say
    how to get the data. Should a later datasets read the snapshot offline, the rows must be right."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    write_hub_snapshot(hf_home / "hub", ("rte",), scratch)
    start = time.monotonic()
    try:
        rows = load_split(get_task("rte"), "validation")
    except FileNotFoundError as error:
        assert HUB_DATASET in str(error) and "glue.data_dir" in str(error)
    else:
        assert [row["label"] for row in rows] == rte_rows("validation")["label"]
    assert time.monotonic() - start < 5
