"""The encoder half of the Painters study: encoders fine-tuned on GLUE under each plan.

- `tasks`: the GLUE task table, their metrics (scikit-learn, scipy) and chance levels;
- `data`: task rows from local files or the local Hugging Face cache (`nyu-mll/glue`);
- `finetune`: `painters finetune`, a job that fine-tunes one model on one task with one seed
  under each of its plans (transformers' Trainer, the plan applied by `painters.surgery`
  during training and evaluation) and writes the same score parquet as `painters evaluate`.
"""
