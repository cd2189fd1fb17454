"""The LayerShuffle study (Freiberger et al., arXiv 2407.04513): vision transformers trained to
survive any layer order, then evaluated shuffled, pruned, merged and ensembled.

- `vision`: image data (scikit-learn's 8x8 digits; image folders) and ViT models (a tiny one built
  from a config, or a pretrained Hugging Face ViT/DeiT);
- `training`: the training variants (sequential, LayerShuffle, -position, -predict, LayerDrop) on
  the core's plans and surgery: each batch runs a plan drawn for it; atomic checkpoints, resume.
"""
