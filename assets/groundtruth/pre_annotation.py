"""Ground Truth pre-annotation Lambda: hands one manifest line to the worker template as task.input."""

import json


def lambda_handler(event, context):
    line = event["dataObject"]
    return {
        "taskInput": {
            "source": line["source"],
            "responses": line["responses"],
            "system": line.get("system", ""),
            # Liquid reads camelCase keys more easily than the manifest's hyphenated ones.
            "studioPromptId": str(line["studio-prompt-id"]),
            "studioResponseIds": json.dumps(line["studio-response-ids"]),
        },
        "isHumanAnnotationRequired": "true",
    }
