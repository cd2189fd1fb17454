"""The workflow's plan (painters.workflow_plan), computed directly from a config, without running Snakemake:
jobs and batches, stale and pending scores, LayerShuffle trainings, merges and UMAPs, figures, config errors."""

import copy
import json
import re
import time

import pytest
import yaml
from snakemake.utils import validate

from painters import sweep
from painters.results import score_path, scores_frame, write_atomic
from painters.workflow_plan import Resources, StaleScore, plan_workflow
from test_aggregate_figures import row
from workflow_helpers import REPO

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def config_of(*names: str) -> dict:
    """config/NAME.yaml files merged in order, as several --configfile are."""
    config = {}
    for name in names:
        config = sweep.merge(config, yaml.safe_load((REPO / f"config/{name}.yaml").read_text()))
    return config


def validated(config: dict, results) -> dict:
    """`config` with RESULTS as its results folder, as common.smk hands it to plan_workflow: schema
    defaults filled by Snakemake's own validate, `{results}` expanded, the demo's variants added."""
    config = copy.deepcopy(config)
    config["results"] = str(results)
    assert sweep.schema_problem(config, yaml.safe_load(SCHEMA.read_text())) is None
    validate(config, str(SCHEMA))
    return sweep.with_demo_variants(sweep.with_results_paths(config))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    results = tmp_path_factory.mktemp("demo") / "results"
    return results, plan_workflow(validated(config_of("config"), results))


def test_the_demo_plans_every_score_job_in_batches_with_their_inputs(demo):
    results, plan = demo
    assert plan.depths == {"demo": 12, "vit-digits-pretrained": 6, "minilm": 6}
    assert plan.kinds == {"demo": "decoder", "vit-digits-pretrained": "vision", "minilm": "encoder"}
    config = validated(config_of("config"), results)
    assert list(plan.jobs) == sweep.expand_jobs(config, plan.depths, plan.kinds)
    assert plan.pending == plan.jobs and plan.stale == {}  # nothing on disk yet
    # decoder scores in evaluation jobs of one benchmark each, encoder scores in fine-tuning jobs of one task and seed
    assert len(plan.batches) == 4 and {b.benchmark for b in plan.batches} == set(config["benchmarks"])  # one job each
    assert [(b.benchmark, b.train_seed, len(b.plans)) for b in plan.glue_batches] == [
        ("demo_paraphrase", 0, 7), ("demo_sentiment", 0, 7)]
    # the pretrained digits ViT: every plan in one job, made after its pretraining
    [images] = plan.vision_batches
    assert (images.model, images.benchmark, len(images.plans)) == ("vit-digits-pretrained", "digits", 48) and "baseline" in images.plans
    assert images.inputs == {"pretrained": f"{results}/layershuffle/pretrained/vit-digits"}
    assert images.resources == Resources(gpu=0, mem_mb=2000, runtime=30, cpus_per_task=1, slurm_partition="", slurm_account="")
    planned = [score for batch in (*plan.batches, *plan.glue_batches, *plan.vision_batches) for score in batch.scores]
    assert sorted(planned) == sorted(plan.score_files[: len(plan.jobs)]) and len(planned) == len(set(planned)) == 305 + 48
    for batch in plan.batches:
        assert batch.scores == tuple(f"{results}/scores/demo/{key}/{batch.benchmark}.parquet" for key in batch.plans)
        assert batch.inputs == {"demo_data": f"{results}/demo/data", "demo_model": f"{results}/demo/model",
                                "benchmark_check": plan.benchmark_check}
        assert batch.seconds <= 2 * 60 or len(batch.plans) == 1  # evaluation.minutes_per_job 2 on the cpu profile
        runtime = sweep.runtime_minutes(batch.seconds, 1.5, 5, 30)
        assert batch.resources == Resources(gpu=0, mem_mb=4000, runtime=runtime, cpus_per_task=2, slurm_partition="", slurm_account="")
    assert re.fullmatch(rf"{results}/checks/benchmarks\.[0-9a-f]{{12}}\.ok", plan.benchmark_check)
    sentiment = plan.glue_batches[1]
    assert sentiment.scores == tuple(f"{results}/scores/minilm/{key}/demo_sentiment.seed0.parquet" for key in sentiment.plans)
    assert sentiment.name == f"{sentiment.plans[0]}+6" and "baseline" in sentiment.plans
    assert all(b.inputs == {"demo_glue": f"{results}/demo/glue"} for b in plan.glue_batches)
    assert plan.demo_inputs["minilm"] == {} and plan.summary == f"{results}/summary.parquet"
    assert plan.glue_training.epochs == 3 and plan.glue_training.learning_rate == 3.0e-4


def test_the_demo_plans_its_layershuffle_study(demo):
    results, plan = demo
    variants = ["layerdrop", "layershuffle", "layershuffle_position", "layershuffle_predict", "sequential"]
    # each variant at seed 0, and seeds 1 and 2 of the merged variants (sequential, layershuffle)
    assert sorted(plan.trainings) == sorted([f"vit-digits.{v}.s0" for v in variants]
                                            + [f"vit-digits.{v}.s{s}" for v in ("sequential", "layershuffle") for s in (1, 2)])
    training = plan.trainings["vit-digits.layershuffle.s1"]
    assert training.folder == f"{results}/layershuffle/models/vit-digits.layershuffle.s1" and training.depth == 6
    assert training.settings.variant == "layershuffle" and training.settings.seed == 1 and training.settings.steps == 300
    # fine-tuned from the base model pretrained once, sequentially, for 600 steps
    [(base, pretraining)] = plan.pretrainings.items()
    assert base == "vit-digits" and pretraining.folder == f"{results}/layershuffle/pretrained/vit-digits" and pretraining.depth == 6
    assert (pretraining.settings.variant, pretraining.settings.seed, pretraining.settings.steps) == ("sequential", 0, 600)
    assert pretraining.settings.learning_rate == training.settings.learning_rate
    assert training.start == pretraining.folder and all(t.start == pretraining.folder for t in plan.trainings.values())
    assert training.trained_from == {"model": "tiny", "data": "digits", "data_seed": 0, "data_dir": None, "layers": 6, "hidden": 64,
                                     "pretrained": pretraining.settings.recorded()}
    # in order, 5 random orders, 1..3 layers pruned in order or shuffled with 3 seeds each, 11 listed plans
    assert len(training.scores) == 1 + 5 + 3 * 3 * 2 + 11 and training.pending == training.scores
    assert training.scores[0] == f"{results}/scores/vit-digits.layershuffle.s1/baseline/digits.parquet"
    assert [(m.base, m.variant) for m in plan.merges] == [("vit-digits", "sequential"), ("vit-digits", "layershuffle")]
    merge = plan.merges[1]
    assert [m.name for m in merge.models] == [f"vit-digits.layershuffle.m{i}" for i in range(10)] + ["vit-digits.layershuffle.ensemble"]
    assert merge.sources == tuple(f"{results}/layershuffle/models/vit-digits.layershuffle.s{s}" for s in (0, 1, 2))
    assert merge.plans == ("baseline", *(f"shuffle_all-S{s}" for s in range(5)))
    assert len(merge.pending) == 11 * 6 and merge.rerun_notes == ()
    assert [m.name for m in plan.umap_models] == sorted(f"vit-digits.{v}.s0" for v in variants)
    assert plan.vision_resources == Resources(gpu=0, mem_mb=2000, runtime=30, cpus_per_task=1, slurm_partition="", slurm_account="")
    # the aggregate reads every score: the sweeps', the trained models', the merged models'
    assert len(plan.score_files) == 305 + 48 + 9 * 35 + 2 * 66


def test_the_demo_figures_per_model(demo):
    results, plan = demo
    every_variant = ["fig04_skip", "fig05_middle_repeat", "fig06_reverse", "fig07_random", "fig08_parallel", "fig09_looped_parallel"]
    assert plan.figures == {
        "demo": ["fig02_skip_switch", "fig03_similarity", *every_variant, "fig10_heatmap", "fig11_all_variants", "whole_stack"],
        "minilm": ["fig03_similarity", "fig04_skip", "fig06_reverse", "fig08_parallel", "fig11_all_variants"],
        "all": ["decoder_encoder"],  # one decoder: no skip_fraction across model sizes
        "vit-digits": ["layershuffle_order", "layershuffle_pruning", "layershuffle_merging", "layershuffle_layers",
                       "layershuffle_umap"],
        # a ViT as it is: every Painters figure but Fig 3 (similarity of texts' hidden states)
        "vit-digits-pretrained": ["fig02_skip_switch", *every_variant, "fig10_heatmap", "fig11_all_variants", "whole_stack"],
    }
    assert len(plan.figure_files) == 2 * 32 and plan.figure_files[:2] == (
        f"{results}/figures/demo/fig02_skip_switch.png", f"{results}/figures/demo/fig02_skip_switch.svg")


def test_the_paper_plans_321_evaluation_jobs(tmp_path):
    """README "Job granularity": 9,427 lm-eval scores in 321 evaluation jobs of at most 3 estimated
    H100-hours each (a plan dearer than that alone); 726 BERT-Large fine-tuning runs, one job each."""
    config = validated(config_of("paper"), tmp_path / "results")
    started = time.perf_counter()
    plan = plan_workflow(config)
    seconds = time.perf_counter() - started
    assert len(plan.jobs) == len(plan.pending) == 10153 + 2 * 144
    assert sum(len(b.scores) for b in plan.batches) == 9427 and len(plan.batches) == 321
    assert all(b.seconds <= 180 * 60 or len(b.plans) == 1 for b in plan.batches)
    assert len(plan.glue_batches) == 726 and all(len(b.plans) == 1 for b in plan.glue_batches)
    assert plan.depths == {"llama2-7b": 32, "llama2-13b": 40, "llama2-70b": 80, "bert-large": 24, "vit-base": 12, "deit-base": 12}
    # ViT-B/16 and DeiT-B as they are: one job each over ImageNet's validation images, every plan in it
    assert [(b.model, b.benchmark, len(b.plans)) for b in plan.vision_batches] == [
        ("deit-base", "imagenet-1k", 144), ("vit-base", "imagenet-1k", 144)]
    seventy = next(b for b in plan.batches if b.model == "llama2-70b")
    runtime = sweep.runtime_minutes(seventy.seconds, 1.5, 10, 1440)  # its estimate x margin + startup, at most 1440
    assert seventy.resources == Resources(gpu=4, mem_mb=320000, runtime=runtime, cpus_per_task=16, slurm_partition="", slurm_account="")
    assert seventy.inputs == {"benchmark_check": plan.benchmark_check}  # no demo model to wait for
    assert plan.figures["all"] == ["skip_fraction", "decoder_encoder"]
    assert [m for m, figures in plan.figures.items() if "fig10_heatmap" in figures] == ["llama2-7b", "vit-base", "deit-base"]
    assert plan.trainings == {} and plan.merges == () and plan.umap_models == () and plan.vision_resources is None
    print(f"paper plan: {len(plan.batches)} evaluation jobs, {len(plan.glue_batches)} fine-tuning jobs in {seconds:.2f} s")


def test_the_paper_with_the_layershuffle_study(tmp_path):
    """config/paper.yaml with config/layershuffle.yaml's layershuffle block: both studies in one plan."""
    config = config_of("paper")
    config["layershuffle"] = config_of("layershuffle")["layershuffle"]
    plan = plan_workflow(validated(config, tmp_path / "results"))
    assert len(plan.batches) == 321 and len(plan.glue_batches) == 726
    trained = 2 * (5 * 5 + 2 * 7)  # two base models x five variants x five seeds, and seeds 5-11 of the two merged variants
    assert len(plan.trainings) == trained
    assert all(len(t.pending) == 1 + 5 + 6 * 3 * 2 + 12 for t in plan.trainings.values())
    assert {t.depth for t in plan.trainings.values()} == {12} and plan.vision_depths == {"deit-b16": 12, "vit-b16": 12}
    assert len(plan.merges) == 2 * 2 and all(len(m.pending) == 101 * 6 and len(m.sources) == 12 for m in plan.merges)
    assert len(plan.umap_models) == 2 * 5
    assert plan.vision_resources.gpu == 1 and plan.vision_resources.runtime == 1440
    assert plan.figures["vit-b16"] == plan.figures["deit-b16"] == [
        "layershuffle_order", "layershuffle_pruning", "layershuffle_merging", "layershuffle_layers", "layershuffle_umap"]
    assert len(plan.score_files) == 10153 + 2 * 144 + trained * 54 + 4 * 101 * 6


# ---- scores on disk: stale ones with their reasons, pending ones


def put(results, model, plan_key, benchmark, train_seed=None, **recorded):
    """A score file as `painters evaluate` (or finetune, evaluate-vision) writes it, with `recorded` changed
    (the row of test_aggregate_figures, renamed to `plan_key`: staleness reads no other plan column)."""
    path = score_path(results, model, plan_key, benchmark, train_seed)
    made = {**row(model, "baseline", benchmark, "acc", 0.5, 0.25), "plan": plan_key, "train_seed": train_seed, **recorded}
    write_atomic(scores_frame([made]), path)
    return str(path)


def trained(**settings):
    """What a score of a LayerShuffle model (or a fine-tuned one) records besides its training: no lm-eval settings."""
    return {"limit": None, "bootstrap_iters": None, "settings": json.dumps({"dtype": "float32", **settings})}


def test_finished_scores_are_not_planned_and_stale_ones_are_with_their_reason(tmp_path):
    from painters.glue.finetune import TrainingSettings
    from painters.layershuffle.training import TrainSettings

    results = tmp_path / "results"
    config = validated(config_of("config"), results)
    trained_from = plan_workflow(config).trainings["vit-digits.layershuffle.s0"].trained_from
    current = [put(results, "demo", "baseline", "demo_choice"),  # limit 100, fewshot seed 1234, float32: as the demo asks
               put(results, "minilm", "baseline", "demo_sentiment", 0, **trained()),
               put(results, "vit-digits.layershuffle.ensemble", "baseline", "digits", **trained())]
    stale = {
        put(results, "demo", "skip-N0", "demo_choice", limit=50.0): "made with limit 50, the config asks for 100",
        put(results, "demo", "reverse-N1", "demo_cloze", num_fewshot=2, fewshot_seed=None):
            "few-shot score made before few-shot seeding (its examples were drawn at random)",
        put(results, "demo", "skip-N1", "demo_arith", settings='{"dtype": "bfloat16"}'):
            "made with dtype bfloat16, the config asks for float32",
        put(results, "minilm", "skip-N0", "demo_sentiment", 0, **trained(training=TrainingSettings(
            epochs=1, learning_rate=3.0e-4, batch_size=16, max_seq_length=24).recorded())):
            "its model was trained with epochs 1, the config asks for 3",
        put(results, "vit-digits.sequential.s0", "shuffle_all-S0", "digits", **trained(training=TrainSettings(
            variant="sequential", steps=600, learning_rate=1e-3, warmup_steps=60, position_loss_weight=0.1).recorded())):
            "its model was trained with steps 600, the config asks for 300",
        put(results, "vit-digits.layershuffle.s0", "baseline", "digits", **trained(trained_from={**trained_from, "data_seed": 1})):
            "its model was trained from data_seed 1, the config asks for 0",
        put(results, "vit-digits.layershuffle.s0", "skip_layer-L1", "digits", **trained(trained_from={
            **trained_from, "pretrained": {**trained_from["pretrained"], "steps": 400}})):
            "its model was trained from pretrained steps 400, the config asks for 600",
    }
    unreadable = score_path(results, "demo", "parallel-N2", "demo_pair")
    unreadable.parent.mkdir(parents=True)
    unreadable.write_bytes(b"not a parquet file")
    plan = plan_workflow(config)

    assert {path: s.reason for path, s in plan.stale.items()} == {**stale, str(unreadable): "unreadable score file (ArrowInvalid)"}
    note = plan.stale[f"{results}/scores/demo/skip-N0/demo_choice.parquet"]
    assert re.fullmatch(rf"{results}/reruns/demo/skip-N0/demo_choice\.\d{{14}}\.why", note.note)
    assert note.message == f"made with limit 50, the config asks for 100; recomputed the score of {note.scored}"
    assert plan.stale[str(unreadable)] == StaleScore("unreadable score file (ArrowInvalid)", "unknown",
                                                     f"{results}/reruns/demo/parallel-N2/demo_pair.unknown.why")
    # in the order found: the sweeps' jobs (sorted), then the trained models' (sorted), then the merges'
    assert plan.stale_warning == (
        "8 finished score(s) will be recomputed: 1 x unreadable score file (ArrowInvalid); "
        "1 x few-shot score made before few-shot seeding (its examples were drawn at random); "
        "1 x made with limit 50, the config asks for 100; 1 x made with dtype bfloat16, the config asks for float32; "
        "1 x its model was trained with epochs 1, the config asks for 3; "
        "1 x its model was trained from data_seed 1, the config asks for 0; "
        "1 x its model was trained from pretrained steps 400, the config asks for 600; "
        "1 x its model was trained with steps 600, the config asks for 300")

    # pending: every score but the current ones; a stale score's job waits for its rerun note
    outputs = {score: batch for batch in (*plan.batches, *plan.glue_batches, *plan.vision_batches) for score in batch.scores}
    assert len(plan.pending) == len(plan.jobs) - 2 and len(outputs) == len(plan.pending)
    assert not set(current) & set(outputs)
    for path in [*stale, str(unreadable)]:
        if path in outputs:
            assert plan.stale[path].note in outputs[path].inputs["rerun_notes"]
    retrained = f"{results}/scores/minilm/skip-N0/demo_sentiment.seed0.parquet"
    assert outputs[retrained].inputs == {"demo_glue": f"{results}/demo/glue", "rerun_notes": [plan.stale[retrained].note]}
    assert "baseline" not in outputs[retrained].plans  # its baseline is current
    sequential = plan.trainings["vit-digits.sequential.s0"]
    assert len(sequential.pending) == len(sequential.scores) == 35 and len(sequential.rerun_notes) == 1
    assert len(plan.trainings["vit-digits.layershuffle.s0"].pending) == 35  # its baseline and skip_layer-L1 are stale
    layershuffle = next(m for m in plan.merges if m.variant == "layershuffle")
    assert len(layershuffle.pending) == 66 - 1 and layershuffle.rerun_notes == ()
    assert plan.score_files == plan_workflow(config).score_files  # what is on disk does not change what is aggregated


def test_adding_a_setting_plans_only_the_new_scores(tmp_path):
    """With every score of the demo's cloze task made, a new K makes jobs of the new plans only."""
    results = tmp_path / "results"
    config = config_of("config")
    config["layershuffle"]["enabled"] = False
    config["models"]["vit-digits-pretrained"]["enabled"] = False  # the LayerShuffle rules pretrain it
    plan = plan_workflow(validated(config, results))
    for job in plan.jobs:
        if job.benchmark == "demo_cloze":
            put(results, job.model, job.plan, job.benchmark)
    assert all(b.benchmark != "demo_cloze" for b in plan_workflow(validated(config, results)).batches)
    config["sweeps"][1]["K"].append(8)
    again = plan_workflow(validated(config, results))
    cloze = [b for b in again.batches if b.benchmark == "demo_cloze"]
    assert sorted(key for b in cloze for key in b.plans) == [f"looped_parallel-N{n}-K8" for n in range(6)]
    assert again.stale == {} and again.stale_warning is None


# ---- config errors: each names the key, the value and what is valid


def demo_like(**changes):
    config = {
        "demo": {"enabled": True},
        "models": {"demo": {"path": "{results}/demo/model"}},
        "benchmarks": ["demo_choice", "demo_cloze"],
        "include_paths": ["{results}/demo/data/tasks"],
        "sweeps": [{"variants": ["skip"], "N": [0, 1]}],
    }
    config.update(changes)
    return config


TINY_VIT = {"enabled": True, "base_models": {"vit": {"model": "tiny"}}, "variants": ["sequential"], "umap": {"seeds": []}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"models": {"demo": {"path": "{results}/demo/model", "enabled": False}}},
         "models: none is enabled (configured: demo), and layershuffle.enabled is false: nothing to run"),
        ({"sweeps": []}, "sweeps: none given for the models demo (or disable them: enabled: false)"),
        ({"demo": {"enabled": False}}, "models.demo.path is the demo model {results}/demo/model, but demo.enabled is false"),
        ({"models": {"demo": {"path": "./no-such-model"}}},
         "models.demo.path './no-such-model': no such folder (give a model folder or a Hugging Face id)"),
        ({"similarity": {"texts": "/no/texts.txt"}},
         "similarity.texts '/no/texts.txt': no such file (one text per line), or null to skip Fig 3"),
        ({"glue": {"tasks": ["rtee"]}}, "glue.tasks: unknown task(s) rtee (valid: cola, sst2, mrpc"),
        ({"glue": {"tasks": ["mine"], "custom_tasks": {"mine": "sst2"}}}, "glue.custom_tasks mine read local files: set glue.data_dir"),
        ({"glue": {"data_dir": "./no-glue"}}, "glue.data_dir './no-glue': no such folder (DATA_DIR/TASK/SPLIT.jsonl"),
        ({"demo": {"enabled": False}, "models": {"m": {"path": "org/never-downloaded", "num_layers": 4}},
          "glue": {"data_dir": "{results}/demo/glue"}},
         "glue.data_dir is the demo's tasks {results}/demo/glue, but demo.enabled is false"),
        ({"benchmarks": []}, "benchmarks: none given, but demo are decoders, scored on lm-eval benchmarks: give some"),
        ({"models": {"demo": {"path": "{results}/demo/model"}, "enc": {"path": "{minilm_l6}", "device": "cpu"}},
          "glue": {"fp16": True}}, "glue.fp16 needs a GPU, but models.enc.device is cpu"),
        ({"sweeps": [{"variants": ["skip"], "models": ["llama"]}]}, "sweeps[0].models: ['llama'] not in models (valid: demo)"),
        ({"models": {"m": {"path": "org/never-downloaded"}}}, "models.m.path 'org/never-downloaded': no config.json there"),
        ({"layershuffle": {**TINY_VIT, "data": "cifar100"}},
         "layershuffle.base_models.vit: model tiny and data cifar100 do not go together"),
        ({"layershuffle": {**TINY_VIT, "data_dir": "/images"}}, "layershuffle.data_dir is for data imagefolder, not digits: remove it"),
        ({"layershuffle": {**TINY_VIT, "base_models": {"vit": {"model": "org/never-downloaded"}}, "data": "imagefolder",
                           "data_dir": "."}}, "layershuffle.base_models.vit: no config.json of 'org/never-downloaded'"),
        ({"layershuffle": {**TINY_VIT, "umap": {"seeds": [3]}}}, "layershuffle.umap.seeds [3]: not among layershuffle.seeds [0]"),
        ({"layershuffle": {**TINY_VIT, "merging": {"variants": ["sequential"], "seeds": [0, 1], "merges": 100}}},
         "layershuffle.merging.merges: 100 merges: 2 models over 6 layers make 1.."),
    ],
)
def test_config_errors_name_the_key_the_value_and_what_is_valid(tmp_path, changes, message):
    results = tmp_path / "results"
    with pytest.raises(ValueError) as error:
        plan_workflow(validated(demo_like(**changes), results))
    assert message.replace("{results}", str(results)) in str(error.value)


def test_a_model_folder_without_weights_is_refused(tmp_path):
    folder = tmp_path / "weightless"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 4}')
    config = demo_like(models={"m": {"path": str(folder)}}, demo={"enabled": False}, include_paths=[])
    with pytest.raises(ValueError, match=rf"models\.m\.path '{re.escape(str(folder))}': the folder has no weights \(\*\.safetensors"):
        plan_workflow(validated(config, tmp_path / "results"))


def test_jobs_are_sized_by_the_cost_model_and_a_measured_benchmark_replaces_the_estimate(tmp_path):
    from painters import cost
    from painters.workflow_plan import PassEstimates, cost_table

    config = config_of("paper")
    config["models"] = {"llama2-7b": config["models"]["llama2-7b"]}
    config["sweeps"] = [{"models": ["llama2-7b"], "variants": ["looped_parallel"], "M": [7], "K": list(range(1, 9))}]
    config["benchmarks"], config["glue"]["tasks"] = ["arc_easy", "hellaswag"], []
    config["evaluation"]["minutes_per_job"] = 3
    plan = plan_workflow(validated(config, tmp_path / "results"))
    estimates = PassEstimates(plan_config := validated(config, tmp_path / "results"), plan.models, plan.pending)
    assert estimates.tokens("llama2-7b", "hellaswag") == cost.benchmark_tokens("hellaswag", False, None, None)
    for batch in plan.batches:  # each job's estimate is the cost model's for its plans, within 30 minutes
        schedules = [sweep.plans_module.parse(key).schedule(32) for key in batch.plans]
        job = cost.job_cost(schedules, cost.STATED_SHAPES["meta-llama/Llama-2-7b-hf"], estimates.tokens(batch.model, batch.benchmark),
                            cost.DEVICES["h100"], 2, 32)
        assert batch.seconds == pytest.approx(job.seconds) and batch.peak_bytes == job.peak_bytes
        assert batch.seconds <= 3 * 60 or len(batch.plans) == 1
        assert batch.resources.runtime == sweep.runtime_minutes(batch.seconds, 1.5, 10, 480)
    hellaswag = [b for b in plan.batches if b.benchmark == "hellaswag"]
    assert len(hellaswag) > 1 and len([b for b in plan.batches if b.benchmark == "arc_easy"]) == 1
    table = cost_table(plan, plan_config)
    assert re.search(r"llama2-7b +hellaswag +%d +9 " % len(hellaswag), table)
    assert table.splitlines()[-1] == f"total: {sum(b.seconds for b in plan.batches) / 3600:.1f} GPU-hours on h100 ({len(plan.batches)} jobs)"
    # a finished score records the benchmark's real size: the next plan sizes the other jobs by it
    path = score_path(tmp_path / "results", "llama2-7b", "baseline", "hellaswag")
    write_atomic(scores_frame([{**row("llama2-7b", "baseline", "hellaswag", "acc", 0.5, 0.25), "num_layers": 32, "limit": None,
                                "requests": 400, "request_tokens": 400 * 77}]), path)
    smaller = plan_workflow(validated(config, tmp_path / "results"))
    measured = cost.measured_tokens(400, 400 * 77, computed=cost.benchmark_tokens("hellaswag", False, None, None).computed)
    assert PassEstimates(plan_config, smaller.models, smaller.pending).tokens("llama2-7b", "hellaswag") == measured
    assert len([b for b in smaller.batches if b.benchmark == "hellaswag"]) == 1  # 400 requests, not 40,168


def test_passes_per_job_sizes_a_model_by_layer_work_instead(tmp_path):
    config = config_of("config")
    config["evaluation"]["passes_per_job"] = 1000
    plan = plan_workflow(validated(config, tmp_path / "results"))
    demo = [b for b in plan.batches if b.model == "demo"]
    assert len(demo) == 4 and all(b.seconds is None for b in demo)  # one job per benchmark
    assert {b.resources.runtime for b in demo} == {30}  # the model's own runtime


def test_painters_sweep_cost_prints_the_table_and_the_total(capsys):
    from painters import cli

    assert cli.main(["sweep", "--configfile", str(REPO / "config/paper.yaml"), "--cost"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["model", "benchmark", "jobs", "plans"]
    assert re.fullmatch(r"total: [0-9.]+ GPU-hours on h100 \(321 jobs\)", out[-1])
    assert any(line.startswith("llama2-7b ") and " gsm8k " in line for line in out)


def test_the_cost_table_puts_measured_hours_beside_the_estimate():
    import polars as pl

    from painters.cost_table import table

    summary = scores_frame([{**row("m", plan, "arc", metric, 0.5, 0.25), "seconds": seconds}
                            for plan, seconds in (("baseline", 1800.0), ("skip-N1", 0.5)) for metric in ("acc", "acc_norm")])
    summary = summary.with_columns(pl.lit(None, dtype=pl.Float64).alias("normalized"))
    estimates = [{"model": "m", "benchmark": "arc", "gpus": 2, "plans": 3, "jobs": 1, "estimated_gpu_hours": 1.25},
                 {"model": "m", "benchmark": "gsm", "gpus": 2, "plans": 3, "jobs": 2, "estimated_gpu_hours": 7.0}]
    frame = table(summary, estimates, "h100")
    assert frame.rows(named=True) == [
        # each plan's seconds once (not once per metric row), times the model's GPUs
        {"model": "m", "benchmark": "arc", "device": "h100", "plans": 3, "finished": 2, "jobs": 1,
         "estimated_gpu_hours": 1.25, "measured_gpu_hours": 2 * 1800.5 / 3600},
        {"model": "m", "benchmark": "gsm", "device": "h100", "plans": 3, "finished": 0, "jobs": 2,
         "estimated_gpu_hours": 7.0, "measured_gpu_hours": None},
    ]
