"""Export the retrieval embedding of a checkpoint to ONNX (dynamic batch axis, L2-normalised output).

    python scripts/export.py --checkpoint outputs/demo/checkpoints/final.pt --out outputs/demo/final.onnx
"""

from reid.apps.export import main

if __name__ == "__main__":
    main()
