"""Training: Llama-style model presets, the DeepSpeed job (launcher, rank worker,
checkpoints, resume), supervised fine-tuning with LoRA, and export to Hugging Face
directories. Heavy imports (torch, deepspeed, transformers) stay inside functions."""
