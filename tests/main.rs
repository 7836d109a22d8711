mod phantom;
