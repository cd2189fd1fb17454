"""kv_cache reference gives the official Painters code's own greedy generations.

The fixture (tests/fixtures/official_generation, README there) holds the generations of the
official code (gpt/routing_llama.py on transformers 4.41.2, run in its own environment) for a
tiny trained 8-layer Llama, under sequential, parallel and looped-parallel plans, at batch size 1
and as one left-padded batch of 4 (HFLM's batching).
"""

import json
from pathlib import Path

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance

from painters import generation, surgery
from painters import plan as plans
from painters.engine import SweepLM

FIXTURE = Path(__file__).parent / "fixtures" / "official_generation"
CASES = json.loads((FIXTURE / "cases.json").read_text())
PARALLEL = [case["plan"] for case in CASES["cases"] if case["method"] == "loop_parallel"]


@pytest.fixture(scope="module")
def official_model():
    model = transformers.AutoModelForCausalLM.from_pretrained(FIXTURE / CASES["model"], dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(FIXTURE / CASES["model"])
    return model, tokenizer


def generate(model, plan_key, input_ids, attention_mask, kv_cache):
    plan = plans.parse(plan_key)
    schedule = plan.schedule(surgery.num_layers(model))
    with surgery.apply(model, plan):
        cache = generation.PlanCache(model.config, schedule, kv_cache)
        output = model.generate(input_ids, attention_mask=attention_mask, do_sample=False,
                                max_new_tokens=CASES["max_new_tokens"], **{generation.cache_argument(model): cache})
    return output[:, input_ids.shape[1]:].tolist()


def until_eos(tokens, eos=2):
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda case: case["plan"])
def test_reference_cache_generates_the_official_tokens(official_model, case):
    model, _ = official_model
    assert surgery.called_layers(plans.parse(case["plan"]).schedule(8)) == case["calls"]
    agree = {"reference": 0, "exact": 0}
    for prompt, official in zip(CASES["prompts"], case["outputs"]):
        ids = torch.tensor([prompt])
        for mode in agree:
            agree[mode] += until_eos(generate(model, case["plan"], ids, torch.ones_like(ids), mode)[0]) == official
    assert agree["reference"] == len(CASES["prompts"])
    if case["plan"] in PARALLEL:  # the exact cache is another computation: most generations differ
        assert agree["exact"] < len(CASES["prompts"]) // 2
    else:  # sequential plans: both modes are the same, and equal to the official code
        assert agree["exact"] == len(CASES["prompts"])


def test_a_shared_pass_in_reference_mode_gives_the_official_batched_generations(official_model):
    """Through SweepLM's generate_until (HFLM's left-padded batch, the prefill shared along the trie)."""
    model, tokenizer = official_model
    batched = CASES["batched_input"]
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=4, kv_cache="reference")
    settings = {"until": [], "max_gen_toks": CASES["max_new_tokens"], "do_sample": False}
    requests = [Instance("generate_until", {}, (text, dict(settings)), idx=0) for text in CASES["batched_prompt_texts"]]
    assert [len(lm.tok_encode(text)) for text in CASES["batched_prompt_texts"]] == [sum(m) for m in batched["attention_mask"]]
    plan_list = [plans.parse(case["plan"]) for case in CASES["batched"]]
    with lm.sweep(plan_list):
        for plan, case in zip(plan_list, CASES["batched"]):
            lm.plan = plan
            got = lm.generate_until(requests, disable_tqdm=True)
            # HFLM decodes the new tokens and cuts them at its stop strings (here the eos text)
            expected = [tokenizer.decode([t for t in until_eos(row) if t not in (0,)]).split("</s>")[0] for row in case["outputs"]]
            assert got == expected, plan.key
