"""Ground Truth pre-annotation Lambda: hands one manifest line to the worker template as task.input.

Ground Truth calls it with {"version": ..., "labelingJobArn": ..., "dataObject": <the manifest line>} and reads back
{"taskInput": <what the template sees as task.input>, "isHumanAnnotationRequired": <boolean>}.
"""


def lambda_handler(event, context):
    line = event["dataObject"]
    if line.get("studio-task") == "demonstration":  # write the answer a rule asks for, from the best candidate
        edited_from = line.get("studio-edited-from")
        task = {
            "source": line["source"],
            "system": line.get("system", ""),
            "rule": line["rule"],
            "candidate": line.get("candidate", ""),
            "studioPromptId": str(line["studio-prompt-id"]),
            "studioEditedFrom": "" if edited_from is None else str(edited_from),
        }
        return {"taskInput": task, "isHumanAnnotationRequired": True}
    return {
        "taskInput": {
            "source": line["source"],
            "responses": line["responses"],
            "system": line.get("system", ""),
            # Liquid reads camelCase keys more easily than the manifest's hyphenated ones. The ids stay a list: the
            # template turns them into JSON once, with to_json.
            "studioPromptId": str(line["studio-prompt-id"]),
            "studioResponseIds": line["studio-response-ids"],
        },
        "isHumanAnnotationRequired": True,
    }
