"""In-memory fakes of every port in hvguest.services.ports; they record calls."""
