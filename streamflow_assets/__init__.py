"""StreamFlow: pure logic, resources and Dagster assets for subscriber churn."""
