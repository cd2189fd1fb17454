"""`painters similarity`: layer x layer cosine similarity of a model's hidden states (Painters Fig 3).

For each text, the baseline plan's hidden state after every layer is taken at every
real (non-padding) token; the similarity of layers i and j is the cosine of their
states at the same token, averaged over all tokens of all texts.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl


def cosine_matrix(states: list, mask):
    """[layers x layers] mean cosine similarity; `states`: per layer [batch, seq, hidden]; `mask`: [batch, seq]."""
    import torch

    keep = mask.bool()
    units = torch.stack([torch.nn.functional.normalize(s[keep].float(), dim=-1) for s in states])  # [L, tokens, H]
    return torch.einsum("itd,jtd->ij", units, units) / units.shape[1]


def similarity_frame(model_name: str, matrix) -> pl.DataFrame:
    size = matrix.shape[0]
    return pl.DataFrame(
        {
            "model": [model_name] * size * size,
            "layer_i": [i for i in range(size) for _ in range(size)],
            "layer_j": [j for _ in range(size) for j in range(size)],
            "cosine": matrix.reshape(-1).tolist(),
        }
    )


def compute(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 16):
    """The mean cosine matrix over `texts` for a loaded causal LM or encoder (layer outputs, embeddings excluded)."""
    import torch

    from painters import plan, surgery

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    total, count = None, 0
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length).to(device)
        with torch.no_grad():
            states = surgery.hidden_states(model, plan.parse("baseline"), **batch)[1:]
        tokens = int(batch["attention_mask"].sum())
        matrix = cosine_matrix(states, batch["attention_mask"]) * tokens
        total = matrix if total is None else total + matrix
        count += tokens
    return (total / count).cpu()


def run_command(args) -> int:
    import torch
    import transformers

    from painters import sweep
    from painters.evaluate import check_model_source
    from painters.results import write_atomic

    check_model_source(args.model)
    texts_path = Path(args.texts)
    if not texts_path.is_file():
        raise FileNotFoundError(f"--texts {args.texts}: no such file (one text per line)")
    texts = [line.strip() for line in texts_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"--texts {args.texts} has no non-empty lines")
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    config = transformers.AutoConfig.from_pretrained(args.model)
    # an encoder's hidden states come from its base model (it has no language-model head to load)
    loader = transformers.AutoModel if sweep.model_kind(config.to_dict()) == "encoder" else transformers.AutoModelForCausalLM
    model = loader.from_pretrained(args.model, dtype=dtype)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    matrix = compute(model, tokenizer, texts, max_length=args.max_length)
    write_atomic(similarity_frame(args.name, matrix), args.out)
    print(f"similarity: {matrix.shape[0]} layers over {len(texts)} texts -> {args.out}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("similarity", help="layer x layer cosine similarity of hidden states (Fig 3)")
    parser.add_argument("--model", required=True, help="model folder or Hugging Face id (local cache)")
    parser.add_argument("--name", required=True, help="model name in the results")
    parser.add_argument("--texts", required=True, help="text file, one text per line")
    parser.add_argument("--out", required=True, help="parquet to write")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.set_defaults(func=run_command)
