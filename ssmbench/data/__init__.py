"""Task data generated in code, seeded: synthetic capability tasks and phonebooks. Nothing is downloaded."""
