"""Training of the bundled demo model "reelgraph-tiny" (procedural clips, tiny Wan VAE + DiT).

Not imported by the engine or the app; run the scripts from the repository root, e.g.
`.venv/bin/python -m training.train_vae`. See training/README.md.
"""
