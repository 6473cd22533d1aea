"""The pipeline's stages, one module and one entry point (`run`) each: data, cpt, sft, dpo, export, evaluate."""
