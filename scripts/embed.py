r"""Embed every image under a folder with a checkpoint into features.npy + manifest.csv (resumable).

    python scripts/embed.py data/gallery --checkpoint outputs/demo/checkpoints/final.pt --out outputs/gallery
    python scripts/embed.py DIR --checkpoint C --out OUT --camera-rule regex --camera-regex '_c(\d+)' --float16
"""

from reid.apps.embed import main

if __name__ == "__main__":
    main()
