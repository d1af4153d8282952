"""Ground Truth annotation-consolidation Lambda: keeps every worker's answer (no voting here).

Ground Truth calls it with {"labelAttributeName": ..., "roleArn": ..., "payload": {"s3Uri": <annotation file>}}; each
data object in that file lists its workers' answers, each answer's annotationData holding the answer as a JSON string
in "content", or the S3 location of that string in "s3Uri". Align Studio imports each worker as its own annotator
and takes the majority itself, so nothing is thrown away. The function's execution role needs s3:GetObject on the
job's output bucket (lambda-role-policy.json).
"""

import json


def consolidate(objects, label_attribute, read):
    """The annotation file's data objects -> Ground Truth's consolidation response, every worker's answer kept.
    `read(s3_uri)` returns the text stored at an S3 URI."""
    result = []
    for item in objects:
        workers = []
        for annotation in item["annotations"]:
            data = annotation["annotationData"]
            text = data["content"] if data.get("content") is not None else read(data["s3Uri"])
            workers.append({"workerId": annotation["workerId"], "answerContent": json.loads(text)})
        result.append(
            {
                "datasetObjectId": item["datasetObjectId"],
                "consolidatedAnnotation": {"content": {label_attribute: {"workers": workers}}},
            }
        )
    return result


def lambda_handler(event, context):
    import boto3  # present in the Lambda runtime

    s3 = boto3.client("s3")

    def read(uri):
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")

    return consolidate(json.loads(read(event["payload"]["s3Uri"])), event["labelAttributeName"], read)
