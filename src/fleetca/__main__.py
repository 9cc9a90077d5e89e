from fleetca.cli.main import app

app()
