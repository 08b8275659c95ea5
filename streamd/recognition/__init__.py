"""Who a tracked face is: embeddings of its best sightings matched against a gallery."""
