"""One command line for the studio: `python -m studio <command> ...`; `python -m studio <command> --help` for each.

train        train from a recipe: what a job runs (studio.training.train)
generate     k candidates per prompt of a set, saved to the database (studio.data.candidates)
prompts      list or import prompt sets (studio.data.prompts)
groundtruth  start a SageMaker Ground Truth labeling job, or fetch its rankings (studio.data.groundtruth)
sagemaker    train or deploy on Amazon SageMaker (studio.training.sagemaker)
publish      a job's adapter: folder and model card, merge, GGUF, push (studio.shipping.publish)
api          keys of the OpenAI-compatible endpoint /v1 (studio.shipping.openai_api)
"""

import importlib
import sys

COMMANDS = {
    "train": "studio.training.train",
    "generate": "studio.data.candidates",
    "prompts": "studio.data.prompts",
    "groundtruth": "studio.data.groundtruth",
    "sagemaker": "studio.training.sagemaker",
    "publish": "studio.shipping.publish",
    "api": "studio.shipping.openai_api",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(
            ("" if asked or not argv else f"unknown command {argv[0]!r}\n\n") + __doc__.strip(),
            file=sys.stdout if asked else sys.stderr,
        )
        return 0 if asked else 2
    # Imported on demand: `train` must not pay for the app's modules, nor `api` for torch.
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
