"""Training: recipes, rewards, the train entry point, and the job queue with its local and SageMaker runners."""
