"""GLUE fine-tuning (painters.glue): training under a plan equals training the model rebuilt with
the plan's layer calls physically in place; frozen mode equals a head trained on precomputed
features; the task table's metrics and chance levels; local data files; the CLI's checks of
bad input and its score files. All on a tiny random BERT, on CPU."""

import copy
import json
import os
import random

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import polars as pl
import pytest
import torch
import transformers
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from painters import cli, exactness, surgery
from painters.glue import data, finetune, tasks
from painters.plan import parse
from painters.tiny import save_tiny_causal_lm

DEPTH = 6
SEQ = 16
BASELINE = parse("baseline")
PLANS = ["skip-N1", "reverse-N0", "middle_repeat-N1", "parallel-N1", "looped_parallel-N1-K2", "random-N0-S0"]
# enough steps for the baseline to learn the task (so predictions vary between plans)
SETTINGS = finetune.TrainingSettings(epochs=8, batch_size=8, learning_rate=3e-3, max_seq_length=SEQ)

POSITIVE = ["good", "great", "fine", "nice", "superb"]
NEGATIVE = ["bad", "awful", "poor", "sad", "dull"]
NEUTRAL = ["the", "movie", "was", "plot", "cast", "really", "and", "a", "film", "story"]


def sentiment_rows(n: int, seed: int, positive_share: float = 0.5) -> list[dict]:
    """Sentences with one sentiment word among neutral ones; label 1 if it is positive."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = int(i < round(n * positive_share))
        words = rng.sample(NEUTRAL, 5)
        words.insert(rng.randrange(6), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append({"sentence": " ".join(words), "label": label, "idx": i})
    rng.shuffle(rows)
    return rows


TRAIN_ROWS = sentiment_rows(48, seed=1)
EVAL_ROWS = sentiment_rows(20, seed=2, positive_share=0.7)  # majority share 0.7


@pytest.fixture(scope="module")
def tokenizer():
    """A BERT word-piece tokenizer whose vocabulary is the special tokens and the sentences' words."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
    return transformers.BertTokenizerFast(vocab={word: i for i, word in enumerate(words)})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train faster on one thread, and much faster when another job shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bert_config(vocab_size: int) -> transformers.BertConfig:
    # dropout stays at its default 0.1: training draws dropout masks, so call order matters
    return transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64, pad_token_id=0, num_labels=2)


@pytest.fixture(scope="module")
def start(tokenizer):
    """The model every run starts from (fine-tuned copies of it)."""
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(bert_config(len(tokenizer)))


@pytest.fixture(scope="module")
def sets(tokenizer):
    task = tasks.get_task("sst2")
    return (finetune.encode(tokenizer, task, TRAIN_ROWS, SEQ), finetune.encode(tokenizer, task, EVAL_ROWS, SEQ))


def train(model, plan, sets, settings=SETTINGS):
    train_set, eval_set = sets
    return finetune.train_and_predict(model, plan, train_set, eval_set, settings, 0, "cpu")


@pytest.fixture(scope="module")
def baseline_run(start, sets):
    model = copy.deepcopy(start)
    return model, train(model, BASELINE, sets)


def rebuilt_name(name: str, calls: list[int]) -> str:
    """The parameter of the plan-trained model that a parameter of the rebuilt model copies."""
    prefix = "bert.encoder.layer."
    if not name.startswith(prefix):
        return name
    position, rest = name[len(prefix):].split(".", 1)
    return f"{prefix}{calls[int(position)]}.{rest}"


@torch.no_grad()
def largest_difference(rebuilt, trained, calls) -> float:
    """Largest relative difference between each parameter of `rebuilt` and the one of `trained` it copies."""
    params = dict(trained.named_parameters(remove_duplicate=False))
    worst = 0.0
    for name, value in rebuilt.named_parameters(remove_duplicate=False):
        other = params[rebuilt_name(name, calls)]
        worst = max(worst, float((value - other).abs().max()) / max(1.0, float(other.abs().max())))
    return worst


@torch.no_grad()
def most_changed(a, b) -> float:
    return max(float((pa - pb).abs().max()) for pa, pb in zip(a.parameters(), b.parameters()))


def test_the_encoded_sets_carry_what_bert_takes(sets, tokenizer):
    """If this fails, encode() drops a model input or pads to another length, and every run trains on other data."""
    train_set, eval_set = sets
    assert {"input_ids", "attention_mask", "token_type_ids", "labels"} <= set(train_set.column_names)
    assert len(train_set) == 48 and len(eval_set) == 20
    assert {len(ids) for ids in train_set["input_ids"]} == {SEQ}
    assert train_set["labels"] == [row["label"] for row in TRAIN_ROWS]
    assert "[UNK]" not in tokenizer.decode(train_set["input_ids"][0])
    pairs = finetune.encode(tokenizer, tasks.get_task("mrpc"), [{"sentence1": "good film", "sentence2": "bad plot", "label": 1}], SEQ)
    assert pairs["token_type_ids"][0][:7] == [0, 0, 0, 0, 1, 1, 1]  # [CLS] good film [SEP] bad plot [SEP]
    stsb = finetune.encode(tokenizer, tasks.get_task("stsb"), [{"sentence1": "a", "sentence2": "a", "label": 3}], SEQ)
    assert stsb["labels"] == [3.0]


@pytest.mark.parametrize("key", PLANS)
def test_training_under_a_plan_equals_training_the_rebuilt_model(key, start, sets, baseline_run):
    """If this fails, fine-tuning under surgery is not fine-tuning the plan's network: gradients,
    dropout draws or optimizer steps differ from those of the model with the calls physically stacked."""
    plan = parse(key)
    calls = surgery.called_layers(plan.schedule(DEPTH))

    under_plan = copy.deepcopy(start)
    predicted = train(under_plan, plan, sets)
    rebuilt = exactness.rebuilt_model(start, plan, tie_repeated=True)
    expected = train(rebuilt, BASELINE, sets)

    assert predicted.tolist() == expected.tolist()
    assert largest_difference(rebuilt, under_plan, calls) <= 1e-5
    torch.testing.assert_close(under_plan.classifier.weight, rebuilt.classifier.weight, rtol=1e-5, atol=1e-6)
    # layers the plan never calls are not trained
    for index in set(range(DEPTH)) - set(calls):
        for trained, original in zip(under_plan.bert.encoder.layer[index].parameters(), start.bert.encoder.layer[index].parameters()):
            assert torch.equal(trained, original)
    # the plan mattered: else the comparison above could not fail
    baseline_model, baseline_predicted = baseline_run
    assert plan.schedule(DEPTH) != BASELINE.schedule(DEPTH)
    assert most_changed(under_plan.classifier, baseline_model.classifier) > 1e-4
    if key == "skip-N1":
        assert predicted.tolist() != baseline_predicted.tolist() or most_changed(under_plan, baseline_model) > 1e-2


@pytest.mark.parametrize("key", ["middle_repeat-N1", "looped_parallel-N1-K2"])
def test_tied_copies_of_a_repeated_layer_share_their_parameters(key, start):
    """If this fails, the rebuilt reference trains each call of a repeated layer as a layer of its own."""
    plan = parse(key)
    calls = surgery.called_layers(plan.schedule(DEPTH))
    rebuilt = exactness.rebuilt_model(start, plan, tie_repeated=True)
    stack = rebuilt.bert.encoder.layer
    first = {}
    for position, index in enumerate(calls):
        first.setdefault(index, position)
        for a, b in zip(stack[position].parameters(), stack[first[index]].parameters()):
            assert a is b
    unique = {id(p) for p in rebuilt.parameters()}
    assert len(unique) == sum(1 for _ in rebuilt.parameters())  # parameters() lists each once
    assert len(list(stack.parameters())) == len(set(calls)) * len(list(stack[0].parameters()))
    # untied (the default, as before), every copy has its own parameters
    untied = exactness.rebuilt_model(start, plan).bert.encoder.layer
    repeated = [position for position, index in enumerate(calls) if first[index] != position]
    assert repeated
    for position in repeated:
        for a, b in zip(untied[position].parameters(), untied[first[calls[position]]].parameters()):
            assert a is not b and torch.equal(a, b)


def test_untied_copies_train_differently(start, sets):
    """If this fails, the tie is not what makes the rebuilt reference match, and the exactness test above proves less."""
    plan = parse("middle_repeat-N1")
    calls = surgery.called_layers(plan.schedule(DEPTH))
    under_plan = copy.deepcopy(start)
    train(under_plan, plan, sets)
    untied = exactness.rebuilt_model(start, plan)
    train(untied, BASELINE, sets)
    assert largest_difference(untied, under_plan, calls) > 1e-4
    assert not torch.allclose(untied.classifier.weight, under_plan.classifier.weight, rtol=1e-5, atol=1e-6)


# ---- frozen mode


class Head(nn.Module):
    """The classification head alone, on given pooled features (attribute names as in BERT)."""

    def __init__(self, model):
        super().__init__()
        self.dropout = copy.deepcopy(model.dropout)
        self.classifier = copy.deepcopy(model.classifier)

    def forward(self, features, labels=None):
        logits = self.classifier(self.dropout(features))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def pooled_features(model, plan, dataset) -> datasets.Dataset:
    inputs = {name: torch.tensor(dataset[name]) for name in ("input_ids", "attention_mask", "token_type_ids")}
    model.eval()
    with surgery.apply(model, plan), torch.no_grad():
        pooled = model.bert(**inputs)[1]
    return datasets.Dataset.from_dict({"features": pooled.tolist(), "labels": dataset["labels"]})


def test_frozen_mode_equals_a_head_trained_on_precomputed_features(start, sets, tmp_path):
    """If this fails, frozen mode is not training a head on fixed features: the base model trains,
    or runs with dropout, or the head sees features of another plan."""
    plan = parse("skip-N1")
    settings = finetune.TrainingSettings(mode="frozen", epochs=2, batch_size=16, max_seq_length=SEQ)
    frozen = copy.deepcopy(start)
    predicted = train(frozen, plan, sets, settings)

    train_set, eval_set = sets
    reference = copy.deepcopy(start)
    train_features, eval_features = pooled_features(reference, plan, train_set), pooled_features(reference, plan, eval_set)
    head = Head(start)
    steps = -(-len(train_set) // settings.batch_size) * int(settings.epochs)
    trainer = transformers.Trainer(model=head, args=finetune.training_arguments(settings, 0, "cpu", str(tmp_path), steps),
                                   train_dataset=train_features)
    trainer.train()
    expected = trainer.predict(eval_features).predictions.argmax(-1)

    assert predicted.tolist() == expected.tolist()
    torch.testing.assert_close(frozen.classifier.weight, head.classifier.weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(frozen.classifier.bias, head.classifier.bias, rtol=1e-5, atol=1e-5)
    assert most_changed(head.classifier, start.classifier) > 1e-3  # the head did train
    for (name, trained), original in zip(frozen.bert.named_parameters(), start.bert.parameters()):
        assert torch.equal(trained, original), name


# ---- tasks: metrics and chance levels


def test_accuracy_chance_is_the_majority_share():
    """If this fails, normalized accuracy is measured from the wrong floor."""
    assert tasks.chance_levels(tasks.get_task("sst2"), [1, 0, 1, 1]) == {"acc": 0.75}
    assert tasks.chance_levels(tasks.get_task("rte"), [0, 0, 0, 1, 1]) == {"acc": pytest.approx(0.6)}
    assert tasks.chance_levels(tasks.get_task("mnli"), [2, 0, 2, 1, 2, 1]) == {"acc": pytest.approx(0.5)}


def test_f1_chance_is_always_predicting_the_majority_class():
    """If this fails, MRPC/QQP's F1 is normalized against a wrong constant predictor."""
    mrpc = tasks.get_task("mrpc")
    # majority 1: precision 2/3, recall 1
    assert tasks.chance_levels(mrpc, [1, 1, 0]) == {"f1": pytest.approx(0.8), "acc": pytest.approx(2 / 3)}
    # majority 0: no positive predicted, F1 0
    assert tasks.chance_levels(mrpc, [0, 0, 1]) == {"f1": 0.0, "acc": pytest.approx(2 / 3)}


def test_correlation_chance_is_zero():
    """If this fails, CoLA's MCC or STS-B's correlations get a nonzero floor."""
    assert tasks.chance_levels(tasks.get_task("cola"), [1, 1, 1, 0]) == {"mcc": 0.0}
    assert tasks.chance_levels(tasks.get_task("stsb"), [0.5, 3.2, 4.9]) == {"pearson": 0.0, "spearmanr": 0.0}


def test_metric_values():
    """If this fails, scores use a wrong metric or the wrong argument order."""
    assert tasks.metric_values(tasks.get_task("cola"), [1, 0, 1, 0], [1, 0, 1, 0]) == {"mcc": 1.0}
    values = tasks.metric_values(tasks.get_task("qqp"), [1, 1, 0, 0], [1, 0, 0, 0])
    assert values == {"f1": pytest.approx(2 / 3), "acc": 0.75}
    stsb = tasks.metric_values(tasks.get_task("stsb"), [1.0, 2.0, 3.5], [0.0, 1.0, 5.0])
    assert stsb["spearmanr"] == pytest.approx(1.0) and 0.9 < stsb["pearson"] < 1.0
    assert tasks.accuracy_stderr([1, 0, 1, 1], [1, 1, 1, 1]) == pytest.approx(0.25)


def test_unknown_task_names_the_valid_ones():
    """If this fails, a typo in a task name gives an unhelpful error."""
    with pytest.raises(ValueError, match="unknown GLUE task 'sst3'") as error:
        tasks.get_task("sst3")
    for name in tasks.GLUE_TASKS:
        assert name in str(error.value)


def test_custom_tasks_follow_their_glue_task():
    """If this fails, a custom task reads other columns or scores other metrics than its GLUE task."""
    task = tasks.get_task("pairs", {"pairs": "mrpc"})
    assert (task.name, task.text_columns, task.num_labels, task.metrics, task.validation_split) == (
        "pairs", ("sentence1", "sentence2"), 2, ("f1", "acc"), "validation")
    assert tasks.get_task("graded", {"graded": "stsb"}).is_regression
    assert "pairs" in tasks.task_table({"pairs": "mrpc"}) and "pairs" not in tasks.GLUE_TASKS
    with pytest.raises(ValueError, match="'sst9', which is not a GLUE task"):
        tasks.task_table({"mine": "sst9"})
    with pytest.raises(ValueError, match="name of a GLUE task"):
        tasks.task_table({"cola": "sst2"})


# ---- data files

ROWS = [
    {"sentence1": "it's \"great\", really", "sentence2": "a, b and c", "label": 1, "idx": 0},
    {"sentence1": "plain words", "sentence2": "it isn't", "label": 0, "idx": 1},
    {"sentence1": "semi; colon", "sentence2": "x", "label": 1, "idx": 2},
]


def write_split(folder, split, kind, rows):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.{kind}"
    frame = pl.DataFrame(rows)
    if kind == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif kind == "csv":
        frame.write_csv(path)
    elif kind == "tsv":  # as GLUE's own files: tab-separated, quotes left as they are
        lines = ["\t".join(frame.columns)] + ["\t".join(str(row[c]) for c in frame.columns) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        frame.write_parquet(path)
    return path


@pytest.mark.parametrize("kind", data.FILE_TYPES)
def test_every_file_type_reads_the_same_rows(kind, tmp_path):
    """If this fails, the same task gives other rows (and other scores) depending on its file type."""
    task = tasks.get_task("rte")
    write_split(tmp_path / "rte", "validation", kind, ROWS)
    read = data.load_split(task, "validation", tmp_path)
    assert read == [{"sentence1": row["sentence1"], "sentence2": row["sentence2"], "label": row["label"]} for row in ROWS]


def test_a_missing_split_names_the_folder_and_the_files_looked_for(tmp_path):
    """If this fails, a user with a misplaced file is not told where it should be."""
    task = tasks.get_task("sst2")
    write_split(tmp_path / "sst2", "train", "jsonl", [{"sentence": "a", "label": 0}])
    with pytest.raises(FileNotFoundError) as error:
        data.load_split(task, "validation", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "sst2") in message
    for name in ("validation.jsonl", ".csv", ".tsv", ".parquet", "sentence"):
        assert name in message


def test_a_file_lacking_a_text_column_names_it(tmp_path):
    """If this fails, a file with wrong columns fails later with a KeyError deep in tokenization."""
    write_split(tmp_path / "mrpc", "train", "csv", [{"sentence1": "a", "text": "b", "label": 1}])
    with pytest.raises(ValueError, match="no column\\(s\\) sentence2"):
        data.load_split(tasks.get_task("mrpc"), "train", tmp_path)


# ---- the command line


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, tokenizer):
    """The tiny BERT saved with its tokenizer, as a model folder."""
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    transformers.BertModel(bert_config(len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("glue_data")
    for task in ("mytask", "sst2"):
        write_split(folder / task, "train", "jsonl", TRAIN_ROWS)
        write_split(folder / task, "validation", "jsonl", EVAL_ROWS)
    return folder


def finetune_args(model, out, data_dir, *extra, task="sst2", plans=("baseline", "skip-N1")):
    return ["finetune", "--model", str(model), "--name", "tiny", "--task", task, "--plans", *plans, "--out", str(out),
            "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "16", "--max-seq-length", str(SEQ),
            "--device", "cpu", *extra]


def score_files(out):
    return sorted(p for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", ["unknown task", "decoder", "plan too deep", "missing data", "fp16 on cpu"])
def test_bad_input_fails_before_any_training(case, encoder_dir, data_dir, tmp_path, capsys):
    """If this fails, a job with bad input trains (and may write scores) before failing, or fails
    with a traceback instead of one clear message."""
    out = tmp_path / "out"
    model, data, extra, plans, task = encoder_dir, data_dir, [], ("baseline", "skip-N1"), "sst2"
    expected = {"unknown task": "unknown GLUE task 'sst7'", "decoder": "decoder (llama)",
                "plan too deep": "skip-N7 does not fit this 6-layer model", "missing data": "no train split",
                "fp16 on cpu": "fp16 needs a CUDA GPU"}[case]
    if case == "unknown task":
        task = "sst7"
    elif case == "decoder":
        model = save_tiny_causal_lm(tmp_path / "llama", arch="llama", layers=2)
    elif case == "plan too deep":
        plans = ("baseline", "skip-N7")
    elif case == "missing data":
        data = tmp_path / "no_such_folder"
    else:
        extra = ["--fp16"]
    capsys.readouterr()
    assert cli.main(finetune_args(model, out, data, *extra, task=task, plans=plans)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("painters finetune: error: ") and expected in captured.err
    assert "Traceback" not in captured.err
    if case == "missing data":
        assert str(data / "sst2") in captured.err
    assert score_files(out) == []


def test_a_run_writes_one_score_per_plan_and_keeps_finished_ones(encoder_dir, data_dir, tmp_path, capsys):
    """If this fails, the job writes scores elsewhere or with wrong fields, or a rerun recomputes finished scores."""
    out = tmp_path / "out"
    args = finetune_args(encoder_dir, out, data_dir, "--custom-task", "mytask=sst2", task="mytask")
    assert cli.main(args) == 0
    paths = [out / "scores" / "tiny" / plan / "mytask.seed0.parquet" for plan in ("baseline", "skip-N1")]
    assert score_files(out) == sorted(paths)
    for plan, path in zip(("baseline", "skip-N1"), paths):
        frame = pl.read_parquet(path)
        assert frame.height == 1
        row = frame.row(0, named=True)
        assert (row["benchmark"], row["train_seed"], row["metric"], row["plan"]) == ("mytask", 0, "acc", plan)
        assert row["random_baseline"] == pytest.approx(0.7)
        assert row["n_samples"] == 20 and row["num_layers"] == DEPTH and 0.0 <= row["value"] <= 1.0
        assert row["M"] == (0 if plan == "baseline" else 3)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    capsys.readouterr()

    assert cli.main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert score_files(out) == sorted(paths)
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
