# Config validation, the sweep table and the helpers the rules share.
import os
import shlex

from snakemake.utils import min_version, validate

from painters import plan as painters_plan
from painters import sweep

min_version("9.0")


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
REPORTS = config["reports"]
DEMO = config["demo"]
DEMO_DATA = f"{RESULTS}/demo/data"
DEMO_MODEL = f"{RESULTS}/demo/model"
MODELS = {name: config["models"][name] for name in sweep.enabled_models(config)}


def check_config():
    """Checks a schema cannot express; each error names the key, the value and what is valid."""
    if not MODELS:
        raise ValueError(f"models: none is enabled (configured: {', '.join(config['models']) or 'none'})")
    for name, model in MODELS.items():
        if model["path"] == DEMO_MODEL and not DEMO["enabled"]:
            raise ValueError(f"models.{name}.path is the demo model {DEMO_MODEL}, but demo.enabled is false")
        if model["path"] != DEMO_MODEL and model["path"].startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(model["path"])):
            raise ValueError(f"models.{name}.path {model['path']!r}: no such folder (give a model folder or a Hugging Face id)")
    texts = config["similarity"]["texts"]
    if texts and not texts.startswith(DEMO_DATA) and not os.path.isfile(texts):
        raise ValueError(f"similarity.texts {texts!r}: no such file (one text per line), or null to skip Fig 3")


check_config()


def model_depth(name):
    # the demo model does not exist before the run: its depth is the configured one
    if MODELS[name]["path"] == DEMO_MODEL and MODELS[name].get("num_layers") is None:
        return DEMO["layers"]
    return sweep.read_num_layers(name, MODELS[name])


DEPTHS = {name: model_depth(name) for name in MODELS}
JOBS = sweep.expand_jobs(config, DEPTHS)
SCORE_FILES = [f"{RESULTS}/scores/{j.model}/{j.plan}/{j.benchmark}.parquet" for j in JOBS]
SUMMARY = f"{RESULTS}/summary.parquet"


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    plan=painters_plan.KEY_WILDCARD_REGEX,
    benchmark=r"[A-Za-z0-9][A-Za-z0-9._-]*",


def uses_demo(model):
    return MODELS[model]["path"] == DEMO_MODEL


def demo_inputs(model):
    """The demo's data and model when `model` is the demo model (so they are built first)."""
    return {"demo_data": DEMO_DATA, "demo_model": DEMO_MODEL} if uses_demo(model) else {}


class NoRerun:
    """Shell arguments that must not trigger a rerun when they change (batch size, device, worker).

    Snakemake's params trigger records only plain values (str, int, list, ...);
    an object of this class is left out of that record, yet `{params.x}` renders it.
    """

    def __init__(self, args):
        self.args = [str(a) for a in args]

    def __str__(self):
        return shlex.join(self.args)


def slurm_setting(model, key, env):
    """Partition/account: the model's resources, then the config's `slurm` block, then the environment."""
    value = MODELS[model].get("resources", {}).get(f"slurm_{key}") or config["slurm"].get(key) or os.environ.get(env, "")
    return value
