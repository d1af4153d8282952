"""The ground floor: the database, paths, the Hub, roles, the method table and job records."""
