"""The service's SQL (migrations, procedures, demo data), installed as participation_grpc.sql."""
