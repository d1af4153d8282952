"""Ground Truth annotation-consolidation Lambda: keeps every worker's answer (no voting here).

Align Studio imports each worker as its own annotator and takes the majority itself, so nothing is thrown away.
"""

import json


def consolidate(objects, label_attribute):
    """The payload's data objects -> Ground Truth's consolidation response, every worker's answer kept."""
    result = []
    for item in objects:
        workers = [{"workerId": a["workerId"], "answerContent": json.loads(a["annotationData"]["content"])}
                   for a in item["annotations"]]
        result.append({"datasetObjectId": item["datasetObjectId"],
                       "consolidatedAnnotation": {"content": {label_attribute: {"workers": workers}}}})
    return result


def lambda_handler(event, context):
    import boto3  # present in the Lambda runtime

    bucket, key = event["payload"]["s3Uri"].removeprefix("s3://").split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return consolidate(json.loads(body), event["labelAttributeName"])
