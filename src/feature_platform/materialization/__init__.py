"""Loading the online store: the load, its watermarks, Ray writes."""
