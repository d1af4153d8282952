"""Models in this process: loading, decoding, chat, the offline toxicity classifier."""
