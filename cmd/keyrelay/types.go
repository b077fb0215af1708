package main

import (
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/settings"
)

type (
	appConfig = settings.Config
	appLogger = zap.Logger
)
