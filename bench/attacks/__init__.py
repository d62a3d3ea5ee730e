"""The attacks wing: FGSM and PGD (`pgd`, also the inner loop of adversarial training), and the
adapters of the reference AutoAttack (`autoattack_adapter`) and of torchattacks'
zoo (`torchattacks_adapter`)."""
