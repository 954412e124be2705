// Each fuzz executable's entry point (see FuzzEntry.c).
