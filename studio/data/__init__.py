"""What people and judges make: prompt sets, candidates, rankings, rubrics, teams, feedback, pairs, imports."""
